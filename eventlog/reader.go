package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Follow delivers every record on filters from sequence from (1 for the
// beginning) in stream order to fn, then keeps delivering new ones until ctx
// ends. caughtUp, if not nil, is called once, from fn's goroutine, as soon
// as every record that existed when Follow started was delivered (at once if
// there were none). Follow returns ctx's error, or the consumer's error.
//
// fn runs on one goroutine at a time and must not block for long: it holds
// up delivery. No filter means every subject of the stream.
func (l *Log) Follow(ctx context.Context, from uint64, filters []string, fn func(Record), caughtUp func()) error {
	return l.read(ctx, from, filters, func(r Record, _ nats.Header) { fn(r) }, caughtUp, false)
}

// Replay delivers every record on filters from sequence from that exists
// when it starts, in stream order, and returns when they were all
// delivered.
func (l *Log) Replay(ctx context.Context, from uint64, filters []string, fn func(Record)) error {
	return l.read(ctx, from, filters, func(r Record, _ nats.Header) { fn(r) }, nil, true)
}

// read delivers records with the headers they are stored with.
func (l *Log) read(ctx context.Context, from uint64, filters []string, fn func(Record, nats.Header), caughtUp func(), stopAtEnd bool) error {
	if from == 0 {
		from = 1
	}
	if len(filters) == 0 {
		filters = []string{l.subjects.All()}
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
		// Removed by the server this long after the last pull, not the
		// default 5 minutes: every replay and tail makes one.
		InactiveThreshold: 10 * time.Second,
	}
	cons, err := l.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	info := cons.CachedInfo()
	if info == nil {
		if info, err = cons.Info(ctx); err != nil {
			return fmt.Errorf("consumer info: %w", err)
		}
	}
	// A replay ends at the stream's last record when it starts. Neither a
	// pending count of 0 nor the start's count of records all delivered
	// proves it (records leave by TTL, an ordered consumer that resets
	// under load can deliver a record again): under load a replay stopped
	// one family event short (TestReplayEqualsLive). So short of the end
	// the log itself is asked (rest).
	var end uint64
	if stopAtEnd {
		if end, err = l.LastSeq(ctx); err != nil {
			return err
		}
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	done := func() {
		once.Do(func() {
			if caughtUp != nil {
				caughtUp()
			}
			if stopAtEnd {
				cancel()
			}
		})
	}
	if info.NumPending == 0 {
		done()
		if stopAtEnd {
			return nil
		}
	}
	// mu serialises fn with the end of the read: once read returns, fn
	// is not running and will not run again (Consume's Stop does not wait
	// for a callback in flight).
	var mu sync.Mutex
	stopped := false
	caught := false
	var lastSeq uint64         // stream sequence of the last record given to fn
	initial := info.NumPending // records on the filters when the read started
	check := make(chan struct{}, 1)
	defer func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
	}()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return // not a stream message; the ordered consumer resets itself
		}
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		rec, err := l.record(m.Subject(), md.Sequence.Stream, md.Timestamp, m.Headers(), m.Data())
		rec.Pending = md.NumPending
		if err != nil {
			l.ReportForged(rec, err) // never delivered: it becomes no state
		} else {
			fn(rec, m.Headers())
		}
		lastSeq = rec.Seq
		if initial > 0 {
			initial--
		}
		// Caught up: nothing pending, or every record that existed at the
		// start delivered (on a busy stream pending may never reach 0). A
		// replay stops only at its end; short of it, the loop below asks
		// the log whether anything is left.
		switch {
		case stopAtEnd && rec.Seq >= end:
			stopped = true // records appended since the start are not part of a replay
			caught = true
			done()
		case stopAtEnd && (md.NumPending == 0 || initial == 0):
			select {
			case check <- struct{}{}:
			default:
			}
		case md.NumPending == 0 || initial == 0:
			caught = true
			done()
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			return // the ordered consumer recreates itself
		}
		if rctx.Err() == nil { // not the read's own end
			l.readError(fmt.Errorf("read the log: %w", err)) // heartbeats missed while a leader moves; it recovers
		}
	}), jetstream.PullMaxMessages(2048))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()
	// Records counted at the start can vanish before they are delivered
	// (a grace record or a DPoP claim reaching its TTL): then neither test
	// above ever passes. Ask the server now and then (and when a replay
	// saw a pending count of 0 short of its end) whether anything is left.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for rctx.Err() == nil {
		select {
		case <-rctx.Done():
			continue
		case <-check:
		case <-tick.C:
		}
		mu.Lock()
		seen, isCaught := lastSeq, caught
		mu.Unlock()
		if isCaught {
			tick.Stop()
			continue
		}
		var finished bool
		var err error
		if stopAtEnd {
			var left bool
			left, err = l.rest(rctx, filters, max(seen+1, from), end)
			finished = !left
		} else {
			var ci *jetstream.ConsumerInfo
			if ci, err = cons.Info(rctx); err == nil {
				finished = ci.NumPending == 0 && seen >= ci.Delivered.Stream
			}
		}
		if err != nil {
			if rctx.Err() == nil {
				l.readError(fmt.Errorf("read the log: %w", err)) // asked again at the next tick
			}
			continue
		}
		mu.Lock()
		if finished && !caught && lastSeq == seen {
			stopped = stopAtEnd
			caught = true
			done()
		}
		mu.Unlock()
	}
	if stopAtEnd && ctx.Err() == nil {
		return nil
	}
	return ctx.Err()
}

// rest reports whether a record on filters is in the stream between
// sequences from and to, asking the stream leader.
func (l *Log) rest(ctx context.Context, filters []string, from, to uint64) (bool, error) {
	if from > to {
		return false, nil
	}
	for _, f := range filters {
		m, err := l.getMsg(ctx, msgGetRequest{Seq: from, NextFor: f})
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if m.Sequence <= to {
			return true, nil
		}
	}
	return false, nil
}

// readError tells OnReadError, if set, of an error a read recovers from.
func (l *Log) readError(err error) {
	if l.cfg.OnReadError != nil {
		l.cfg.OnReadError(err)
	}
}

// RecordOf returns the record of a message delivered by a consumer of the
// stream (its Pending is the consumer's count of messages still to come).
// It fails for a message that is not a stream message, and with an error
// wrapping ErrForged (reported to OnForged, and returned with the record)
// for one whose authenticator fails.
func (l *Log) RecordOf(m jetstream.Msg) (Record, error) {
	md, err := m.Metadata()
	if err != nil {
		return Record{}, err
	}
	rec, err := l.record(m.Subject(), md.Sequence.Stream, md.Timestamp, m.Headers(), m.Data())
	rec.Pending = md.NumPending
	if err != nil {
		l.ReportForged(rec, err)
	}
	return rec, err
}
