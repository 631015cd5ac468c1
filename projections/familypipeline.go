package projections

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// creates pipelines the writes of families' first events: each is
// published asynchronously (create: the key's last sequence expected 0),
// and one goroutine settles them in order as the server acknowledges
// them, acknowledging the event only then. So the delivery of the next
// events does not wait for each write's round trip, which was most of a
// GenerateTokens event's cost in the projector. An event of a family
// whose create is not settled waits for it (families' entries are written
// in their events' order); a create the server refuses (the entry exists,
// or a deleted entry's marker is there) is settled by the read-and-decide
// path, as it would have been without the pipeline.
type creates struct {
	p   *FamilyProjector
	kv  jetstream.KeyValue
	ctx context.Context

	queue chan *pendingCreate

	mu      sync.Mutex
	pending map[string]chan struct{} // key → closed once its create is settled
}

// pendingCreate is a first event whose create is in flight.
type pendingCreate struct {
	m       jetstream.Msg
	rec     eventlog.Record
	st      *eventsv1.FamilyState
	key     string
	ack     jetstream.PubAckFuture
	settled chan struct{}
}

// maxPendingCreates bounds the creates in flight; the delivery waits when
// they are all taken.
const maxPendingCreates = 256

// newCreates starts the goroutine that settles creates; it ends when ctx
// ends and the returned wait function waits for it.
func newCreates(ctx context.Context, p *FamilyProjector, kv jetstream.KeyValue) (*creates, func()) {
	c := &creates{p: p, kv: kv, ctx: ctx, queue: make(chan *pendingCreate, maxPendingCreates), pending: map[string]chan struct{}{}}
	done := make(chan struct{})
	go func() { defer close(done); c.settle() }()
	return c, func() { <-done }
}

// await waits until no create of key is in flight.
func (c *creates) await(key string) {
	c.mu.Lock()
	ch := c.pending[key]
	c.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-c.ctx.Done():
		}
	}
}

// start publishes the create of key for rec's state st, delivered as m.
// It reports false, having started nothing, if the publish could not be
// made: the caller writes synchronously.
func (c *creates) start(m jetstream.Msg, key string, rec eventlog.Record, st *eventsv1.FamilyState) bool {
	data, err := c.p.codec.seal(key, familyRecordOf(rec, st))
	if err != nil {
		return false // the synchronous write seals again, and counts it
	}
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(0)}
	if d := ttl(rec); d > 0 {
		opts = append(opts, jetstream.WithMsgTTL(d))
	}
	ack, err := c.p.js.PublishMsgAsync(&nats.Msg{Subject: c.p.kvSubject(key), Data: data}, opts...)
	if err != nil {
		return false
	}
	pc := &pendingCreate{m: m, rec: rec, st: st, key: key, ack: ack, settled: make(chan struct{})}
	c.mu.Lock()
	c.pending[key] = pc.settled
	c.mu.Unlock()
	select {
	case c.queue <- pc:
	case <-c.ctx.Done():
		c.release(pc) // not acknowledged: delivered again
	}
	return true
}

// settle settles the creates in the order they were started.
func (c *creates) settle() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case pc := <-c.queue:
			c.settleOne(pc)
		}
	}
}

func (c *creates) settleOne(pc *pendingCreate) {
	defer c.release(pc)
	var err error
	select {
	case <-pc.ack.Ok():
	case err = <-pc.ack.Err():
	case <-c.ctx.Done():
		return // not acknowledged: delivered again
	}
	switch {
	case err == nil:
		c.p.codec.observe(CacheWrite, CacheOK)
		c.p.applied.Add(1)
		_ = pc.m.Ack()
	case errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err):
		// The entry exists (the event delivered again) or holds a deleted
		// entry's marker: the read decides, as for any other event.
		c.p.codec.observe(CacheWrite, CacheConflict)
		c.p.settle(c.ctx, c.kv, pc.m, pc.rec, pc.st)
	default:
		c.p.codec.observe(CacheWrite, CacheError)
		if c.p.cfg.OnError != nil {
			c.p.cfg.OnError(err)
		}
		_ = pc.m.NakWithDelay(time.Second)
	}
}

func (c *creates) release(pc *pendingCreate) {
	c.mu.Lock()
	if c.pending[pc.key] == pc.settled {
		delete(c.pending, pc.key)
	}
	c.mu.Unlock()
	close(pc.settled)
}
