package projections

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
)

// Runner feeds a Set from the log through an ordered consumer: first the
// whole history, then every new event as it is appended.
type Runner struct {
	log         *eventlog.Log
	set         *Set
	onBadRecord func(eventlog.Record, error)
	onError     func(error)

	ready     chan struct{}
	readyOnce sync.Once

	pending atomic.Uint64

	mu      sync.Mutex
	waiters []waiter
}

type waiter struct {
	seq uint64
	ch  chan struct{}
}

// NewRunner returns a runner that feeds set from log. onBadRecord, if not
// nil, is told of every record that does not decode (it is skipped); a
// forged record never reaches the set, or is refused by it, and is
// reported to the log's OnForged;
// onError, if not nil, of every failure to read the log (the runner
// retries).
func NewRunner(log *eventlog.Log, set *Set, onBadRecord func(eventlog.Record, error), onError func(error)) *Runner {
	return &Runner{log: log, set: set, onBadRecord: onBadRecord, onError: onError, ready: make(chan struct{})}
}

// Filters returns the filter the projections read: the whole stream, as
// one filter. Grace records and DPoP claims, the only records that are no
// projection's events, are skipped by Set.Apply; they expire within
// minutes, so they are a small part of any log. One filter, because an
// ordered consumer with several filter subjects replays about 300 times
// slower on a stream of many distinct subjects (nats-server 2.15: 519
// records/s against 162,000/s for 40,000 family events; see the README's
// Benchmarks): a replica would take half an hour to start on a million
// events.
func Filters(s eventlog.Subjects) []string {
	return []string{s.All()}
}

// Run feeds the set until ctx ends. It resumes after the last applied
// sequence if restarted on the same set.
func (r *Runner) Run(ctx context.Context) error {
	// When the consumer cannot be set up (no stream leader yet, the
	// connection down), the error is reported and the runner starts again
	// after the last applied record.
	return untilDone(ctx, func(ctx context.Context) error {
		return r.log.Follow(ctx, r.set.Seq()+1, Filters(r.log.Subjects()), r.apply, func() {
			r.readyOnce.Do(func() { close(r.ready) })
			r.notify()
		})
	}, r.onError, 250*time.Millisecond)
}

// untilDone runs run again, pause after each return, until ctx ends; each
// error is told to onError (if not nil) unless ctx ended. It is how every
// long-lived reader of the log survives a leader election or a lost
// connection.
func untilDone(ctx context.Context, run func(context.Context) error, onError func(error), pause time.Duration) error {
	for {
		err := run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
	}
}

func (r *Runner) apply(rec eventlog.Record) {
	r.pending.Store(rec.Pending)
	err := r.set.Apply(rec)
	switch {
	case errors.Is(err, eventlog.ErrForged):
		r.log.ReportForged(rec, err) // an event published again
	case err != nil && r.onBadRecord != nil && errors.Is(err, events.ErrBadRecord):
		r.onBadRecord(rec, err)
	}
	r.notify()
}

func (r *Runner) notify() {
	seq := r.set.Seq()
	r.mu.Lock()
	kept := r.waiters[:0]
	for _, w := range r.waiters {
		if w.seq <= seq {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	r.waiters = kept
	r.mu.Unlock()
}

// Ready is closed once the set has caught up with the log as it was when
// Run started.
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// WaitFor blocks until the set has applied every record up to seq (on the
// projections' subjects) or ctx ends.
func (r *Runner) WaitFor(ctx context.Context, seq uint64) error {
	if r.set.Seq() >= seq {
		return nil
	}
	ch := make(chan struct{})
	r.mu.Lock()
	r.waiters = append(r.waiters, waiter{seq: seq, ch: ch})
	r.mu.Unlock()
	r.notify()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Lag returns how many records the set had still to apply when it last
// received one: 0 once it is caught up.
func (r *Runner) Lag() uint64 { return r.pending.Load() }

// Index is the family index the issuer uses: the families of a Set, and
// its Runner to wait for a sequence to be applied.
type Index struct {
	*Set
	*Runner
}
