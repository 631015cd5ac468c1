package ssf

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// backlogRecount is the least time between two counts of the queued SETs
// of a stream found over the limit: while a receiver stays away, its stream costs one
// count per interval, not one per log record.
const backlogRecount = 10 * time.Second

// backlog bounds the SETs queued for each stream (Config.MaxPendingPerStream),
// so that one receiver that never takes its SETs cannot fill the queue
// every stream shares and push out the others' (the queue drops its
// oldest when over MaxQueueBytes). It keeps an estimate per stream: the
// count read from the queue, plus the SETs queued since; the queue is
// read again when the estimate reaches the limit. It is safe for
// concurrent use.
type backlog struct {
	limit  uint64
	count  func(ctx context.Context, streamID string) (uint64, error)
	now    func() time.Time
	logger *slog.Logger

	mu      sync.Mutex
	pending map[string]uint64    // the estimate
	checked map[string]time.Time // when the queue was last read
	over    map[string]bool      // reported over the limit (logged once)
}

func newBacklog(limit int, count func(context.Context, string) (uint64, error), now func() time.Time, logger *slog.Logger) *backlog {
	return &backlog{limit: uint64(limit), count: count, now: now, logger: logger,
		pending: map[string]uint64{}, checked: map[string]time.Time{}, over: map[string]bool{}}
}

// admit reports whether one more SET may be queued for stream id: not
// when its queued SETs are at the limit. The SET is then not queued (the
// receiver loses it, as it would to the retention); the first refusal is
// logged, and the stream's return under the limit.
func (b *backlog) admit(ctx context.Context, id string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, known := b.pending[id]
	// The estimate only grows: at the limit, read the queue, at once for
	// a stream that was under it, at most once per backlogRecount for one
	// found over it.
	if !known || (n >= b.limit && (!b.over[id] || b.now().Sub(b.checked[id]) >= backlogRecount)) {
		c, err := b.count(ctx, id)
		if err != nil {
			return false, err
		}
		n, b.pending[id], b.checked[id] = c, c, b.now()
	}
	if n >= b.limit {
		if !b.over[id] {
			b.over[id] = true
			b.logger.Warn("ssf: a stream's receiver is not taking its SETs; new ones are dropped until it does (SSF_STREAM_MAX_PENDING)",
				"stream", id, "pending", n, "limit", b.limit)
		}
		return false, nil
	}
	if b.over[id] {
		delete(b.over, id)
		b.logger.Info("ssf: a stream is under SSF_STREAM_MAX_PENDING again; its SETs are queued", "stream", id, "pending", n)
	}
	return true, nil
}

// queued counts one SET queued for stream id.
func (b *backlog) queued(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pending[id]++
}

// forget drops what is kept of the streams not in live (deleted ones).
func (b *backlog) forget(live []*record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	keep := make(map[string]bool, len(live))
	for _, r := range live {
		keep[r.ID] = true
	}
	for id := range b.pending {
		if !keep[id] {
			delete(b.pending, id)
			delete(b.checked, id)
			delete(b.over, id)
		}
	}
}
