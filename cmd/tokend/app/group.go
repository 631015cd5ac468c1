package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// errStoppedEarly is the exit error of a component whose Run returned nil
// before Close asked it to stop: it no longer does its work, and nobody
// would know.
var errStoppedEarly = errors.New("stopped before Close")

// group runs tokend's long-lived components, each a Run(ctx) error on its
// own goroutine, and stops them in reverse order of start. The package doc
// states what happens when one of them exits on its own.
//
// Go and Stop must be called from one goroutine (Start, then Close); the
// components' goroutines only report.
type group struct {
	logger  *slog.Logger
	base    context.Context // Start's context without its deadline: components outlive Start
	failed  chan error      // the first exit while running; see Main.Err
	closing atomic.Bool
	parts   []*component
}

// component is one member of a group.
type component struct {
	name   string
	stop   func(context.Context) error // nil: cancelling its context is enough
	cancel context.CancelFunc
	done   chan struct{}
	err    error // its exit error, set before done closes
}

// newGroup returns an empty group whose components' contexts carry ctx's
// values but not its cancellation.
func newGroup(ctx context.Context, logger *slog.Logger) *group {
	return &group{logger: logger, base: context.WithoutCancel(ctx), failed: make(chan error, 1)}
}

// Go starts run under a context that ends when Stop reaches it. stop, if
// not nil, is called by Stop first, bounded by Stop's context, to make run
// finish gracefully (a server's Shutdown); run must then return.
func (g *group) Go(name string, run func(context.Context) error, stop func(context.Context) error) {
	ctx, cancel := context.WithCancel(g.base)
	c := &component{name: name, stop: stop, cancel: cancel, done: make(chan struct{})}
	g.parts = append(g.parts, c)
	go func() {
		defer close(c.done)
		c.err = g.exited(ctx, c.name, run(ctx))
	}()
}

// exited turns a component's return value into its exit error: nil when it
// ended because Stop asked it to; otherwise wrapped with its name. An exit
// while running is logged here, once, and handed to Failed; an exit error
// during Stop is returned by Stop instead.
func (g *group) exited(ctx context.Context, name string, err error) error {
	stopping := g.closing.Load()
	if stopping && (err == nil || (ctx.Err() != nil && errors.Is(err, context.Canceled))) {
		return nil
	}
	if err == nil {
		err = errStoppedEarly
	}
	err = fmt.Errorf("%s: %w", name, err)
	if stopping {
		return err
	}
	g.logger.Error("a component stopped while tokend runs; tokend stops too, for a supervisor to restart it", "component", name, "error", err)
	select {
	case g.failed <- err:
	default: // an earlier failure already stops the service
	}
	return nil // reported
}

// Failed delivers the first component that exited while the service ran.
func (g *group) Failed() <-chan error { return g.failed }

// Stop stops the components in reverse order of start, each (its stop,
// then its context cancelled, then waiting for its Run to return) before
// the previous one, and returns the errors of their stops and of the exits
// they caused. It waits for every Run to return; ctx bounds each stop.
func (g *group) Stop(ctx context.Context) error {
	g.closing.Store(true)
	var errs []error
	for i := len(g.parts) - 1; i >= 0; i-- {
		c := g.parts[i]
		if c.stop != nil {
			if err := c.stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", c.name, err))
			}
		}
		c.cancel()
		<-c.done
		errs = append(errs, c.err)
	}
	g.parts = nil
	return errors.Join(errs...)
}

// watchEvery returns a reloader's Watch, checking every interval (0: its
// default), as a component's Run.
func watchEvery(watch func(context.Context, time.Duration) error, interval time.Duration) func(context.Context) error {
	return func(ctx context.Context) error { return watch(ctx, interval) }
}
