package breaker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/breaker"
)

// TestBreakerModel (the specification's crypto-integration property
// suite): against a model of the breaker, for random outages of the
// backend, the backend is called exactly while the model is closed, a
// failure is always signing.ErrUnavailable to the caller, and the breaker
// opens at the Failures-th consecutive failure and then refuses at once,
// without calling the backend, until OpenFor (an hour here) has passed.
func TestBreakerModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		failures := rapid.Uint32Range(1, 6).Draw(t, "failures")
		b := breaker.NewBreaker(breaker.Config{Name: "model", Failures: failures, OpenFor: time.Hour})
		var consecutive uint32
		open := false
		for i := range rapid.IntRange(1, 60).Draw(t, "calls") {
			down := rapid.Bool().Draw(t, "down")
			called := false
			out, err := b.Do(context.Background(), "sign", func(context.Context) ([]byte, error) {
				called = true
				if down {
					return nil, errors.New("backend: connection refused")
				}
				return []byte("sig"), nil
			})
			if called == open {
				t.Fatalf("call %d: backend called %v with the model open %v", i, called, open)
			}
			switch {
			case open || down:
				if !errors.Is(err, signing.ErrUnavailable) || out != nil {
					t.Fatalf("call %d: %v, %q; want signing.ErrUnavailable", i, err, out)
				}
			case err != nil || string(out) != "sig":
				t.Fatalf("call %d: %v, %q; want the signature", i, err, out)
			}
			if !open {
				if down {
					consecutive++
				} else {
					consecutive = 0
				}
				open = consecutive >= failures
			}
			if b.Open() != open {
				t.Fatalf("call %d: breaker open %v, model %v (%d consecutive failures of %d)", i, b.Open(), open, consecutive, failures)
			}
		}
	})
}

// TestHalfOpenProbes: a half-open breaker closes only after
// HalfOpenProbes trial calls succeeded; a failed trial opens it again.
func TestHalfOpenProbes(t *testing.T) {
	fail := func(context.Context) ([]byte, error) { return nil, errors.New("down") }
	ok := func(context.Context) ([]byte, error) { return []byte("sig"), nil }
	for _, probes := range []uint32{1, 2} {
		b := breaker.NewBreaker(breaker.Config{Name: "probes", Failures: 3, OpenFor: 50 * time.Millisecond, HalfOpenProbes: probes})
		for range 3 {
			_, _ = b.Do(context.Background(), "sign", fail)
		}
		if !b.Open() {
			t.Fatal("3 failures did not open the breaker")
		}
		time.Sleep(80 * time.Millisecond)
		if _, err := b.Do(context.Background(), "sign", ok); err != nil {
			t.Fatalf("first trial: %v", err)
		}
		// Closed (1 probe): one failure of 3 keeps it closed. Half-open
		// (2 probes): the failed trial opens it again.
		_, _ = b.Do(context.Background(), "sign", fail)
		if want := probes == 2; b.Open() != want {
			t.Fatalf("%d probes: open %v after a good and a failed trial, want %v", probes, b.Open(), want)
		}
	}
}
