package eventlog

import (
	"context"
	"fmt"
	"time"
)

// Provision runs attempt, a JetStream API request that sets something up
// (a stream, a bucket), until it succeeds or ctx ends, each try bounded by
// timeout: while a cluster elects its meta leader a request may get no
// answer at all, and a cluster that just formed answers "no meta leader"
// for a while. When ctx ends first, the error wraps ctx's and names the
// last attempt's error.
func Provision(ctx context.Context, timeout time.Duration, attempt func(context.Context) error) error {
	var lastErr error
	for {
		actx, cancel := context.WithTimeout(ctx, timeout)
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

// Provision runs attempt as the package's Provision does, each try bounded
// by Config.AttemptTimeout.
func (l *Log) Provision(ctx context.Context, attempt func(context.Context) error) error {
	return Provision(ctx, l.cfg.AttemptTimeout, attempt)
}
