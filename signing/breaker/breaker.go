// Package breaker puts a remote signing backend behind a circuit breaker
// (sony/gobreaker), a rate limiter (golang.org/x/time/rate) and a timeout,
// so that a slow or failing KMS, HSM or crypto service costs the caller a
// bounded wait and then no wait at all: while the breaker is open, Sign
// fails at once with signing.ErrUnavailable and the keyring signs with its
// pre-published fallback key instead.
package breaker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/auth-platform/tokenservice/signing"
)

// Observer is told of every call and state change, for metrics and
// events. Implementations must be safe for concurrent use and not block.
type Observer interface {
	// Call reports one operation ("sign", "encrypt", "decrypt"), its
	// outcome ("ok", "error", "rejected") and its duration.
	Call(op, status string, d time.Duration)
	// StateChanged reports the breaker opening (true) or closing.
	StateChanged(open bool)
}

// Config configures a breaker. Zero values select the defaults.
type Config struct {
	// Name names the breaker in its state changes.
	Name string
	// Timeout bounds one call. Default 2 s; negative leaves it to the
	// caller's context (and the backend client's own timeouts).
	Timeout time.Duration
	// RateLimit bounds calls per second; 0 is unlimited.
	RateLimit float64
	// Burst is the limiter's burst. Default max(1, RateLimit).
	Burst int
	// Failures is how many consecutive failures open the breaker.
	// Default 5.
	Failures uint32
	// OpenFor is how long the breaker stays open before it lets trial
	// calls through (half-open). Default 10 s.
	OpenFor time.Duration
	// HalfOpenProbes is how many trial calls the half-open breaker lets
	// through; they must all succeed to close it. Default 1.
	HalfOpenProbes uint32
	// Observer, if set, is told of calls and state changes.
	Observer Observer
}

// Breaker runs calls to a remote backend behind the circuit breaker, the
// rate limiter and the timeout of its Config. Signer uses one per key; a
// backend's other operations (a crypto service's Encrypt and Decrypt) use
// their own. It is safe for concurrent use.
type Breaker struct {
	cb      *gobreaker.CircuitBreaker[[]byte]
	limiter *rate.Limiter
	cfg     Config
}

// NewBreaker returns a closed breaker.
func NewBreaker(cfg Config) *Breaker {
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Failures == 0 {
		cfg.Failures = 5
	}
	if cfg.OpenFor <= 0 {
		cfg.OpenFor = 10 * time.Second
	}
	b := &Breaker{cfg: cfg}
	if cfg.RateLimit > 0 {
		burst := cfg.Burst
		if burst <= 0 {
			burst = max(1, int(cfg.RateLimit))
		}
		b.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), burst)
	}
	if cfg.HalfOpenProbes == 0 {
		cfg.HalfOpenProbes = 1
	}
	b.cb = gobreaker.NewCircuitBreaker[[]byte](gobreaker.Settings{
		Name:        cfg.Name,
		Timeout:     cfg.OpenFor,
		MaxRequests: cfg.HalfOpenProbes,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.Failures
		},
		// The caller's own cancellation says nothing about the backend.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if cfg.Observer != nil && (to == gobreaker.StateOpen || from == gobreaker.StateOpen || to == gobreaker.StateClosed) {
				cfg.Observer.StateChanged(to == gobreaker.StateOpen)
			}
		},
	})
	return b
}

// Open reports whether the breaker is open: calls fail at once.
func (b *Breaker) Open() bool { return b.cb.State() == gobreaker.StateOpen }

// Do runs f, the operation op ("sign", "encrypt", "decrypt"), through the
// breaker with a context bounded by the timeout, and reports it to the
// Observer. It returns an error wrapping signing.ErrUnavailable when the
// breaker is open, the rate limit is reached, or f failed (f's error is
// in the message, not in the chain: what a caller may match is only that
// the backend is unavailable).
func (b *Breaker) Do(ctx context.Context, op string, f func(context.Context) ([]byte, error)) ([]byte, error) {
	var start time.Time
	if b.cfg.Observer != nil {
		start = time.Now()
	}
	if b.limiter != nil && !b.limiter.Allow() {
		b.observe(op, "rejected", start)
		return nil, fmt.Errorf("%w: rate limit of %.0f/s reached", signing.ErrUnavailable, b.cfg.RateLimit)
	}
	out, err := b.cb.Execute(func() ([]byte, error) {
		if b.cfg.Timeout < 0 {
			return f(ctx)
		}
		cctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
		defer cancel()
		return f(cctx)
	})
	switch {
	case err == nil:
		b.observe(op, "ok", start)
		return out, nil
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		b.observe(op, "rejected", start)
		return nil, fmt.Errorf("%w: circuit breaker open", signing.ErrUnavailable)
	default:
		b.observe(op, "error", start)
		return nil, fmt.Errorf("%w: %v", signing.ErrUnavailable, err)
	}
}

func (b *Breaker) observe(op, status string, start time.Time) {
	if b.cfg.Observer != nil {
		b.cfg.Observer.Call(op, status, time.Since(start))
	}
}

// Uncancellable is implemented by a signer whose Sign its context cannot
// stop once it started: PKCS#11, whose module crypto11 calls through cgo
// with no way to cancel. Through a breaker, such a signer signs on a
// goroutine of its own, so that the timeout (or the caller's context)
// returns to the caller and counts as a failure, which opens the breaker
// and lets the fallback key sign; the call left behind ends when the module
// returns, and its result is dropped. While the breaker is open no call
// reaches the backend, so at most Failures calls, and one per half-open
// probe, are left waiting on a hung module.
type Uncancellable interface {
	signing.Signer
	Uncancellable()
}

// Signer is a signing.Signer behind a breaker. It is safe for concurrent
// use.
type Signer struct {
	signing.Signer
	b      *Breaker
	detach bool // the signer is Uncancellable
}

var _ signing.Signer = (*Signer)(nil)

// New wraps s.
func New(s signing.Signer, cfg Config) *Signer {
	_, detach := s.(Uncancellable)
	return &Signer{Signer: s, b: NewBreaker(cfg), detach: detach}
}

// detached runs f on a goroutine of its own and returns its result, or
// ctx's error as soon as ctx ends: f, which does not stop with ctx, then
// finishes alone and its result is dropped.
func detached(f func(context.Context) ([]byte, error)) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		type result struct {
			out []byte
			err error
		}
		done := make(chan result, 1) // f never blocks on a caller that left
		go func() {
			out, err := f(ctx)
			done <- result{out, err}
		}()
		select {
		case r := <-done:
			return r.out, r.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Open reports whether the breaker is open: calls fail at once.
func (s *Signer) Open() bool { return s.b.Open() }

// Sign signs through the breaker. It returns an error wrapping
// signing.ErrUnavailable when the breaker is open, the rate limit is
// reached or the call failed or timed out.
func (s *Signer) Sign(ctx context.Context, input []byte) ([]byte, error) {
	sign := func(ctx context.Context) ([]byte, error) { return s.Signer.Sign(ctx, input) }
	if s.detach {
		input = bytes.Clone(input) // a call left behind must not read the caller's buffer
		sign = detached(sign)
	}
	return s.b.Do(ctx, "sign", sign)
}
