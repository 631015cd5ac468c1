package seal_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/signing/seal"
)

// wrapper wraps data keys with an AES key of its own: the service's side
// of the envelope, for the branches of this package (signing/cryptosvc
// tests the envelope against cmd/cryptod). down makes every call fail.
type wrapper struct {
	aead           cipher.AEAD
	down           atomic.Bool
	wraps, unwraps atomic.Int32
}

var errDown = errors.New("crypto service unavailable")

func newWrapper(t *testing.T) *wrapper {
	block, err := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	aead, _ := cipher.NewGCM(block)
	return &wrapper{aead: aead}
}

func (w *wrapper) WrapKey(_ context.Context, dk []byte) ([]byte, error) {
	if w.down.Load() {
		return nil, errDown
	}
	w.wraps.Add(1)
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	return w.aead.Seal(nonce, nonce, dk, nil), nil
}

func (w *wrapper) UnwrapKey(_ context.Context, wrapped []byte) ([]byte, error) {
	if w.down.Load() {
		return nil, errDown
	}
	w.unwraps.Add(1)
	return w.aead.Open(nil, wrapped[:12], wrapped[12:], nil)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func localSealer(t *testing.T) *seal.Sealer {
	t.Helper()
	s, err := seal.New(rand.Reader, bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func withEnvelope(t *testing.T, s *seal.Sealer, e seal.Envelope) *seal.Sealer {
	t.Helper()
	out, err := s.WithEnvelope(e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEnvelope: values are sealed under data keys the wrapper wraps, one
// wrap per data key; another Sealer (a replica, a restart) opens them
// with one unwrap per data key; what the local key sealed before opens
// too, and is reported for resealing once a data key is current.
func TestEnvelope(t *testing.T) {
	w := newWrapper(t)
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	local := localSealer(t)
	before, err := local.Seal([]byte("sealed before"), []byte("kid-0"))
	if err != nil {
		t.Fatal(err)
	}
	env := withEnvelope(t, local, seal.Envelope{Wrapper: w, Seal: true, Now: clk.Now, DataKeyLifetime: time.Hour})
	if env.NeedsReseal(before) {
		t.Fatal("a local value is reported for resealing before any data key is current")
	}
	if err := env.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !env.NeedsReseal(before) {
		t.Fatal("a local value is not reported for resealing once a data key is current")
	}
	var values [][]byte
	for i := range 10 {
		v, err := env.Seal([]byte{byte(i)}, []byte("aad"))
		if err != nil {
			t.Fatal(err)
		}
		if v[0] != 2 || env.NeedsReseal(v) {
			t.Fatalf("value %d: format %d, needs reseal %v", i, v[0], env.NeedsReseal(v))
		}
		values = append(values, v)
	}
	clk.Advance(time.Hour)
	later, err := env.Seal([]byte("later"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if n := w.wraps.Load(); n != 2 {
		t.Fatalf("%d data keys wrapped for 11 values over an hour and more, want 2", n)
	}

	replica := withEnvelope(t, localSealer(t), seal.Envelope{Wrapper: w, Seal: true})
	for i, v := range values {
		pt, err := replica.Open(v, []byte("aad"))
		if err != nil || !bytes.Equal(pt, []byte{byte(i)}) {
			t.Fatalf("value %d: %v, %v", i, pt, err)
		}
	}
	if pt, err := replica.Open(later, []byte("aad")); err != nil || string(pt) != "later" {
		t.Fatalf("later: %q, %v", pt, err)
	}
	if n := w.unwraps.Load(); n != 2 {
		t.Fatalf("%d unwraps to open values of 2 data keys, want 2", n)
	}
	if pt, err := replica.Open(before, []byte("kid-0")); err != nil || string(pt) != "sealed before" {
		t.Fatalf("a value sealed before the envelope: %q, %v", pt, err)
	}

	tests := []struct {
		name    string
		value   []byte
		aad     string
		wantErr error
	}{
		{"other aad", values[0], "other", seal.ErrOpen},
		{"truncated", values[0][:20], "aad", seal.ErrOpen},
		{"altered wrapped key length", append([]byte{2, 0xff, 0xff}, values[0][3:]...), "aad", seal.ErrOpen},
		{"altered ciphertext", append(append([]byte{}, values[0][:len(values[0])-1]...), values[0][len(values[0])-1]^1), "aad", seal.ErrOpen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := replica.Open(tc.value, []byte(tc.aad)); !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// TestEnvelopeOutage: while the wrapper fails, Seal falls back to the
// local key if allowed (and says so) or fails; a value whose data key is
// not cached cannot be opened and the error says why; a local value is
// not reported for resealing while no data key is current.
func TestEnvelopeOutage(t *testing.T) {
	w := newWrapper(t)
	var fallbacks atomic.Int32
	writer := withEnvelope(t, localSealer(t), seal.Envelope{Wrapper: w, Seal: true})
	v, err := writer.Seal([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.down.Store(true)
	s := withEnvelope(t, localSealer(t), seal.Envelope{Wrapper: w, Seal: true, Fallback: true, OnFallback: func() { fallbacks.Add(1) }})
	local, err := s.Seal([]byte("during the outage"), []byte("aad"))
	if err != nil || local[0] != 3 || fallbacks.Load() != 1 {
		t.Fatalf("fallback seal: format %d, %v, %d fallbacks", local[0], err, fallbacks.Load())
	}
	if s.NeedsReseal(local) {
		t.Fatal("a local value is reported for resealing while the service is down")
	}
	if pt, err := s.Open(local, []byte("aad")); err != nil || string(pt) != "during the outage" {
		t.Fatalf("open the fallback value: %q, %v", pt, err)
	}
	if _, err := s.Open(v, nil); !errors.Is(err, errDown) || errors.Is(err, seal.ErrOpen) {
		t.Fatalf("open with the service down: %v", err)
	}
	strict := withEnvelope(t, localSealer(t), seal.Envelope{Wrapper: w, Seal: true})
	if _, err := strict.Seal([]byte("x"), nil); !errors.Is(err, errDown) {
		t.Fatalf("seal without fallback: %v", err)
	}
	if err := strict.Prepare(context.Background()); !errors.Is(err, errDown) {
		t.Fatalf("prepare: %v", err)
	}
	w.down.Store(false)
	if err := s.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !s.NeedsReseal(local) {
		t.Fatal("the fallback value is not reported for resealing once the service is back")
	}
}

// TestEnvelopeOff: with envelope sealing turned off, new values are
// local, envelope values still open and are reported for resealing; a
// Sealer without a wrapper says what it lacks.
func TestEnvelopeOff(t *testing.T) {
	w := newWrapper(t)
	v, err := withEnvelope(t, localSealer(t), seal.Envelope{Wrapper: w, Seal: true}).Seal([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	off := withEnvelope(t, localSealer(t), seal.Envelope{Wrapper: w})
	if pt, err := off.Open(v, nil); err != nil || string(pt) != "x" || !off.NeedsReseal(v) {
		t.Fatalf("open %q, %v; needs reseal %v", pt, err, off.NeedsReseal(v))
	}
	nv, err := off.Seal([]byte("y"), nil)
	if err != nil || nv[0] != 3 || off.NeedsReseal(nv) || w.wraps.Load() != 1 {
		t.Fatalf("seal with the envelope off: format %d, %v, %d wraps", nv[0], err, w.wraps.Load())
	}
	if _, err := localSealer(t).Open(v, nil); !errors.Is(err, seal.ErrNoWrapper) {
		t.Fatalf("no wrapper: %v", err)
	}
	if _, err := localSealer(t).WithEnvelope(seal.Envelope{}); err == nil {
		t.Fatal("an envelope without a wrapper")
	}
}
