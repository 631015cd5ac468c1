package eventlog

import (
	"context"
	"fmt"
	"time"
)

// firstAttempt bounds Provision's first try; each later try may take twice
// as long as the one before, up to Provision's timeout. nats-server answers
// a request about a stream or a consumer (info, create, update) from the
// leader of its Raft group only, and says nothing while the group has
// none: an idle group whose leader's node was killed, or restarted beside
// it, may take seconds to elect one (measured: up to 15 s on a 2-core
// machine, TestReplicaStartBesideRestartedNode). A request sent before the
// election is never answered, so it is the first try after the election
// that succeeds; a short try loses less time after it, and the longer ones
// that follow still leave a slow cluster time to answer.
const firstAttempt = time.Second

// Provision runs attempt, a JetStream API request that sets something up
// or looks it up (a stream, a bucket), until it succeeds or ctx ends, each
// try bounded by firstAttempt, doubled at every try up to timeout: while a
// cluster elects its meta leader, or a stream's group its leader, a request
// may get no answer at all, and a cluster that just formed answers "no meta
// leader" for a while. When ctx ends first, the error wraps ctx's and names
// the last attempt's error.
func Provision(ctx context.Context, timeout time.Duration, attempt func(context.Context) error) error {
	var lastErr error
	for n := 0; ; n++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout(n, timeout))
		err := attempt(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
		}
		lastErr = err
		_ = sleepCtx(ctx, 200*time.Millisecond) // ctx's end is seen by the next attempt
	}
}

// attemptTimeout is the bound of Provision's try n (0 for the first):
// firstAttempt, doubled at each try, at most limit.
func attemptTimeout(n int, limit time.Duration) time.Duration {
	d := min(firstAttempt, limit)
	for range n {
		if d >= limit {
			break
		}
		d *= 2
	}
	return min(d, limit)
}

// Provision runs attempt as the package's Provision does, each try bounded
// by at most Config.AttemptTimeout.
func (l *Log) Provision(ctx context.Context, attempt func(context.Context) error) error {
	return Provision(ctx, l.cfg.AttemptTimeout, attempt)
}
