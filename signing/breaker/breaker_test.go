package breaker_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/breaker"
	"github.com/auth-platform/tokenservice/signing/local"
)

// flaky is a signer whose Sign is a function field.
type flaky struct {
	signing.Signer
	sign  func(ctx context.Context) error
	calls atomic.Int32
}

func (f *flaky) Sign(ctx context.Context, in []byte) ([]byte, error) {
	f.calls.Add(1)
	if err := f.sign(ctx); err != nil {
		return nil, err
	}
	return f.Signer.Sign(ctx, in)
}

type recorder struct {
	mu     sync.Mutex
	states []bool
	calls  map[string]int
}

func (r *recorder) Call(_, status string, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string]int{}
	}
	r.calls[status]++
}

func (r *recorder) StateChanged(open bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, open)
}

func TestOpensAndRecovers(t *testing.T) {
	ls, _ := local.Generate(rand.Reader, signing.ES256)
	var down atomic.Bool
	down.Store(true)
	f := &flaky{Signer: ls, sign: func(context.Context) error {
		if down.Load() {
			return errors.New("connection refused")
		}
		return nil
	}}
	rec := &recorder{}
	b := breaker.New(f, breaker.Config{Failures: 3, OpenFor: 50 * time.Millisecond, Observer: rec})
	ctx := context.Background()
	for range 3 {
		if _, err := b.Sign(ctx, []byte("x")); !errors.Is(err, signing.ErrUnavailable) {
			t.Fatalf("failing backend: %v", err)
		}
	}
	if !b.Open() {
		t.Fatal("breaker closed after 3 consecutive failures")
	}
	if _, err := b.Sign(ctx, []byte("x")); !errors.Is(err, signing.ErrUnavailable) || f.calls.Load() != 3 {
		t.Fatalf("open breaker: %v, backend called %d times (want 3)", err, f.calls.Load())
	}
	down.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for b.Open() {
		if time.Now().After(deadline) {
			t.Fatal("breaker never half-opened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := b.Sign(ctx, []byte("x")); err != nil {
		t.Fatalf("recovered backend: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.states) < 2 || !rec.states[0] || rec.states[len(rec.states)-1] {
		t.Fatalf("state changes %v, want open then closed", rec.states)
	}
	if rec.calls["error"] != 3 || rec.calls["rejected"] != 1 || rec.calls["ok"] != 1 {
		t.Fatalf("calls %v", rec.calls)
	}
}

func TestTimeoutAndRateLimit(t *testing.T) {
	ls, _ := local.Generate(rand.Reader, signing.ES256)
	hang := &flaky{Signer: ls, sign: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}
	b := breaker.New(hang, breaker.Config{Timeout: 20 * time.Millisecond})
	start := time.Now()
	if _, err := b.Sign(context.Background(), []byte("x")); !errors.Is(err, signing.ErrUnavailable) || time.Since(start) > time.Second {
		t.Fatalf("hanging backend: %v after %s", err, time.Since(start))
	}
	ok := &flaky{Signer: ls, sign: func(context.Context) error { return nil }}
	lim := breaker.New(ok, breaker.Config{RateLimit: 1, Burst: 2})
	var refused int
	for range 5 {
		if _, err := lim.Sign(context.Background(), []byte("x")); errors.Is(err, signing.ErrUnavailable) {
			refused++
		}
	}
	if refused != 3 {
		t.Fatalf("%d of 5 immediate calls refused with burst 2, want 3", refused)
	}
}

// stuck is a signer that, like a PKCS#11 module that hangs, ignores its
// context and returns only when released.
type stuck struct {
	signing.Signer
	release chan struct{}
	calls   atomic.Int32
}

func (s *stuck) Uncancellable() {}

func (s *stuck) Sign(context.Context, []byte) ([]byte, error) {
	s.calls.Add(1)
	<-s.release
	return nil, errors.New("released")
}

// TestUncancellableTimesOut: the timeout bounds the wait on a signer that
// ignores its context (a hung HSM); the calls count as failures and open
// the breaker, after which no call reaches the signer.
func TestUncancellableTimesOut(t *testing.T) {
	ls, _ := local.Generate(rand.Reader, signing.ES256)
	hung := &stuck{Signer: ls, release: make(chan struct{})}
	defer close(hung.release) // the calls left behind end with the test
	var rec recorder
	b := breaker.New(hung, breaker.Config{Timeout: 20 * time.Millisecond, Failures: 2, Observer: &rec})
	for i := range 3 {
		start := time.Now()
		_, err := b.Sign(context.Background(), []byte("x"))
		if !errors.Is(err, signing.ErrUnavailable) || time.Since(start) > time.Second {
			t.Fatalf("call %d to a hung signer: %v after %s", i, err, time.Since(start))
		}
	}
	if !b.Open() {
		t.Fatal("two timed-out calls did not open the breaker")
	}
	if n := hung.calls.Load(); n != 2 {
		t.Fatalf("%d calls reached the hung signer, want 2 (the third refused by the open breaker)", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.calls["error"] != 2 || rec.calls["rejected"] != 1 {
		t.Fatalf("observed %v, want 2 errors and 1 rejection", rec.calls)
	}
}

// BenchmarkOverhead compares a local ES256 signature with the same
// signature through a closed breaker (no limiter): the breaker's cost
// while closed. Target: under 2% of the signature.
func BenchmarkOverhead(b *testing.B) {
	ls, _ := local.Generate(rand.Reader, signing.ES256)
	in := []byte("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0")
	for name, s := range map[string]signing.Signer{"local": ls, "breaker": breaker.New(ls, breaker.Config{})} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Sign(context.Background(), in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWrapper is the wrapper's own cost per call around a signer that
// does nothing (which the noise of a real signature hides): the breaker
// alone, and with the per-call timeout (a context with a timer).
func BenchmarkWrapper(b *testing.B) {
	ls, _ := local.Generate(rand.Reader, signing.ES256)
	for name, cfg := range map[string]breaker.Config{"breaker": {Timeout: -1}, "breaker+timeout": {}} {
		br := breaker.New(fastSigner{ls}, cfg)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := br.Sign(context.Background(), nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type fastSigner struct{ signing.Signer }

func (fastSigner) Sign(context.Context, []byte) ([]byte, error) { return nil, nil }
