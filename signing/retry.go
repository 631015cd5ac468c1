package signing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Backoff configures Retry. The zero value selects the defaults.
type Backoff struct {
	// Timeout bounds the retries of a call whose context has no deadline:
	// no attempt starts later than Timeout after the first one did.
	// Default 2 s, CRYPTO_TIMEOUT's default (tokend sets CRYPTO_TIMEOUT).
	Timeout time.Duration
}

// DefaultRetryTimeout is the default Backoff.Timeout.
const DefaultRetryTimeout = 2 * time.Second

// The waits between attempts double from retryFirst up to retryMax.
const (
	retryFirst = 50 * time.Millisecond
	retryMax   = time.Second
)

// RetryDelay returns the wait before retry n (1 for the first retry),
// given jitter in [0, 1): half of the exponential step (50 ms, 100 ms, …,
// at most 1 s) plus a random share of the other half ("equal jitter"), so
// that replicas that failed together do not retry together, and the wait
// never shrinks to nothing.
func RetryDelay(n int, jitter float64) time.Duration {
	step := retryMax
	if n >= 1 && n <= 6 {
		step = min(retryMax, retryFirst<<(n-1))
	}
	return step/2 + time.Duration(jitter*float64(step/2))
}

// Retry calls f until it succeeds, fails with an error that transient
// does not accept, or the next attempt would start after the deadline:
// ctx's, or b.Timeout after the first attempt when ctx has none. It waits
// RetryDelay between attempts. An attempt runs with ctx: Retry bounds the
// retries, not the calls themselves (a slow key generation still
// completes). It returns f's last result; the error says how many
// attempts were made, and wraps f's.
//
// Only idempotent calls may be passed: a call whose answer was lost may
// have taken effect (see the package documentation).
func Retry[T any](ctx context.Context, b Backoff, transient func(error) bool, f func(context.Context) (T, error)) (T, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		timeout := b.Timeout
		if timeout <= 0 {
			timeout = DefaultRetryTimeout
		}
		deadline = time.Now().Add(timeout)
	}
	for n := 1; ; n++ {
		v, err := f(ctx)
		if err == nil || !transient(err) || ctx.Err() != nil {
			return v, attempts(n, err)
		}
		wait := RetryDelay(n, rand.Float64())
		if time.Until(deadline) < wait {
			return v, attempts(n, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, attempts(n, err)
		case <-t.C:
		}
	}
}

func attempts(n int, err error) error {
	if err == nil || n == 1 {
		return err
	}
	return fmt.Errorf("%w (%d attempts)", err, n)
}
