package signing_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/auth-platform/tokenservice/signing"
)

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n      int
		jitter float64
		want   time.Duration
	}{
		{1, 0, 25 * time.Millisecond},
		{1, 0.5, 37500 * time.Microsecond},
		{2, 0, 50 * time.Millisecond},
		{5, 0, 400 * time.Millisecond},
		{6, 0, 500 * time.Millisecond}, // 1.6 s, capped at 1 s
		{100, 0.999, 999500 * time.Microsecond},
	} {
		if got := signing.RetryDelay(tc.n, tc.jitter); got != tc.want {
			t.Errorf("RetryDelay(%d, %v) = %v, want %v", tc.n, tc.jitter, got, tc.want)
		}
	}
}

// TestRetryDelayBounds: a wait is at least half its step (at most 1 s)
// and less than the step, and the steps never shrink.
func TestRetryDelayBounds(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 1000).Draw(t, "n")
		j := rapid.Float64Range(0, 0.999999).Draw(t, "jitter")
		d := signing.RetryDelay(n, j)
		step := 2 * signing.RetryDelay(n, 0)
		if d < step/2 || d >= step || step > time.Second {
			t.Fatalf("RetryDelay(%d, %v) = %v, want in [%v, %v), at most 1s", n, j, d, step/2, step)
		}
		if signing.RetryDelay(n+1, 0) < signing.RetryDelay(n, 0) {
			t.Fatalf("the step shrinks after retry %d", n)
		}
	})
}

var (
	errTransient = errors.New("transient")
	errPermanent = errors.New("permanent")
)

func isTransient(err error) bool { return errors.Is(err, errTransient) }

// TestRetry checks the loop with calls that fail as told: the loop is the
// unit here, the backends' tests run it against the real services.
func TestRetry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name               string
		failures           []error // what the attempts return before one succeeds
		timeout            time.Duration
		minCalls, maxCalls int
		wantErr            error
	}{
		{"succeeds at once", nil, time.Second, 1, 1, nil},
		{"transient errors are retried", []error{errTransient, errTransient}, 5 * time.Second, 3, 3, nil},
		{"a permanent error is not", []error{errPermanent, errTransient}, 5 * time.Second, 1, 1, errPermanent},
		{"a permanent error after a transient one ends it", []error{errTransient, errPermanent}, 5 * time.Second, 2, 2, errPermanent},
		// The first wait (under 50 ms) fits in 100 ms; the first three
		// (at least 25+50+100 ms) do not.
		{"the timeout bounds the retries", []error{errTransient, errTransient, errTransient, errTransient}, 100 * time.Millisecond, 2, 3, errTransient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			calls := 0
			v, err := signing.Retry(context.Background(), signing.Backoff{Timeout: tc.timeout}, isTransient, func(context.Context) (int, error) {
				calls++
				if calls <= len(tc.failures) {
					return 0, tc.failures[calls-1]
				}
				return 1, nil
			})
			if tc.wantErr == nil && (err != nil || v != 1) {
				t.Fatalf("got %d, %v; want 1, nil", v, err)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if calls < tc.minCalls || calls > tc.maxCalls {
				t.Fatalf("%d calls, want %d to %d", calls, tc.minCalls, tc.maxCalls)
			}
			if err != nil && calls > 1 && !strings.Contains(err.Error(), "attempts)") {
				t.Fatalf("error %q does not say how many attempts were made", err)
			}
		})
	}
}

// TestRetryStopsAtDeadline: the caller's deadline, not Backoff.Timeout,
// bounds the retries when there is one, and a cancelled caller is not
// retried for.
func TestRetryStopsAtDeadline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	calls := 0
	_, err := signing.Retry(ctx, signing.Backoff{Timeout: time.Hour}, isTransient, func(context.Context) (int, error) {
		calls++
		return 0, errTransient
	})
	if !errors.Is(err, errTransient) || calls < 2 {
		t.Fatalf("%d calls, error %v: want the last transient error after retries", calls, err)
	}
	if d := time.Since(start); d > 150*time.Millisecond+time.Second {
		t.Fatalf("returned after %v, deadline 150ms", d)
	}

	ctx, cancel = context.WithCancel(context.Background())
	calls = 0
	_, err = signing.Retry(ctx, signing.Backoff{}, isTransient, func(context.Context) (int, error) {
		calls++
		cancel()
		return 0, errTransient
	})
	if calls != 1 || !errors.Is(err, errTransient) {
		t.Fatalf("cancelled: %d calls, %v", calls, err)
	}
}
