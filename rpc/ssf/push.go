package ssf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxResponseBytes bounds what is read of a receiver's response.
const maxResponseBytes = 16 << 10

// pusher is the worker of one push stream on this replica.
type pusher struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// pushConsumer names the queue's durable consumer of push stream id.
func pushConsumer(id string) string { return "ssf_push_" + id }

// push runs a worker for every enabled push stream until ctx ends, started
// and stopped as streams change. Every replica runs one per stream; the
// stream's durable consumer on the queue has one SET in flight
// (MaxAckPending 1), so one replica pushes at a time, in queue order, and
// a SET whose push failed (or whose pusher died) is pushed again before
// any later one: order per stream and at-least-once, with the same jti.
func (s *Service) push(ctx context.Context) error {
	defer s.stopPushers(func(string) bool { return true })
	for {
		changed := s.store.changes()
		streams, err := s.store.snapshot(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.cfg.Logger.Warn("ssf: reading the streams; retrying", "error", err)
		} else {
			want := map[string]bool{}
			for _, r := range streams {
				if r.Delivery.Method == MethodPush && transmits(r) {
					want[r.ID] = true
					s.startPusher(ctx, r.ID)
				}
			}
			s.stopPushers(func(id string) bool { return !want[id] })
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(30 * time.Second): // a consumer deleted under a worker
		}
	}
}

func (s *Service) startPusher(ctx context.Context, id string) {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	if p, ok := s.pushers[id]; ok {
		select {
		case <-p.done: // ended on an error: start again
		default:
			return
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	p := &pusher{cancel: cancel, done: make(chan struct{})}
	s.pushers[id] = p
	go func() {
		defer close(p.done)
		if err := s.pushStream(wctx, id); err != nil && wctx.Err() == nil {
			s.cfg.Logger.Warn("ssf: push worker stopped; restarting", "stream_id", id, "error", err)
		}
	}()
}

// stopPushers stops the workers whose stream stop accepts, and waits for
// them.
func (s *Service) stopPushers(stop func(id string) bool) {
	s.pushMu.Lock()
	var done []chan struct{}
	for id, p := range s.pushers {
		if stop(id) {
			p.cancel()
			done = append(done, p.done)
			delete(s.pushers, id)
		}
	}
	s.pushMu.Unlock()
	for _, d := range done {
		<-d
	}
}

// pushStream delivers the SETs of push stream id until ctx ends.
func (s *Service) pushStream(ctx context.Context, id string) error {
	cons, err := s.log.JetStream().CreateOrUpdateConsumer(ctx, s.cfg.Queue, jetstream.ConsumerConfig{
		Durable: pushConsumer(id), Description: "Shared Signals: push of stream " + id,
		FilterSubject: s.queue.filter(id), DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.cfg.PushTimeout + 5*time.Second,
		MaxAckPending: 1, MaxDeliver: -1, Replicas: s.log.Replicas(),
	})
	if err != nil {
		return fmt.Errorf("push consumer: %w", err)
	}
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) {
			continue
		}
		if err != nil {
			return err
		}
		s.pushOne(ctx, id, m)
	}
	return nil
}

// pushOne pushes one SET, then acknowledges it (accepted, or refused as
// invalid by the receiver) or asks for it again after a backoff.
func (s *Service) pushOne(ctx context.Context, id string, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	r := s.store.cached(id)
	if r == nil || !transmits(r) || r.Delivery.Method != MethodPush {
		_ = m.Nak() // paused, or changed: held for later
		return
	}
	q, err := s.queue.open(m.Subject(), md.Sequence.Stream, md.Timestamp, m.Data())
	if err != nil {
		s.cfg.Logger.Error("ssf: a queued SET does not open; dropped", "stream_id", id, "error", err)
		_ = s.queue.removeSeq(ctx, md.Sequence.Stream)
		_ = m.Term()
		return
	}
	set, err := resign(ctx, s.cfg.Published, s.cfg.Keys, q.SET)
	if err != nil {
		s.cfg.Logger.Warn("ssf: signing a SET again; retrying", "stream_id", id, "error", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	outcome, err := s.post(ctx, r, set)
	now := s.cfg.Now()
	s.metrics.delivery("push", outcome, q.Time, now)
	switch outcome {
	case OutcomeDelivered, OutcomeRejected:
		if outcome == OutcomeRejected {
			s.cfg.Logger.Warn("ssf: the receiver refused a SET; not sent again", "stream_id", id, "jti", q.JTI, "error", err)
		}
		if err := s.queue.removeSeq(ctx, md.Sequence.Stream); err != nil {
			s.cfg.Logger.Warn("ssf: removing a pushed SET", "stream_id", id, "error", err)
		}
		_ = m.Ack()
	default:
		if ctx.Err() != nil {
			_ = m.Nak() // stopping: the next pusher sends it at once
			return
		}
		delay := backoff(s.cfg.PushBackoff, s.cfg.PushMaxBackoff, md.NumDelivered)
		s.cfg.Logger.Warn("ssf: push failed; retrying", "stream_id", id, "jti", q.JTI, "attempt", md.NumDelivered, "retry_in", delay.String(), "error", err)
		_ = m.NakWithDelay(delay)
	}
}

// backoff is the delay before attempt n+1 of a push: base doubled per
// attempt, at most limit.
func backoff(base, limit time.Duration, attempt uint64) time.Duration {
	d := base
	for i := uint64(1); i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// post sends set to r's endpoint (RFC 8935 §2): the outcome, and what went
// wrong. The response is read up to maxResponseBytes, within PushTimeout.
func (s *Service) post(ctx context.Context, r *record, set string) (string, error) {
	// The URL was checked when the stream was written; check again, the
	// policy may have changed since.
	if err := s.cfg.PushURLs.checkPushURL(r.Delivery.EndpointURL); err != nil {
		return OutcomeFailed, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PushTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.Delivery.EndpointURL, bytes.NewReader([]byte(set)))
	if err != nil {
		return OutcomeFailed, err
	}
	req.Header.Set("Content-Type", "application/secevent+jwt")
	req.Header.Set("Accept", "application/json")
	if r.Delivery.AuthorizationHeader != "" {
		req.Header.Set("Authorization", r.Delivery.AuthorizationHeader)
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return OutcomeFailed, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return OutcomeDelivered, nil
	case resp.StatusCode == http.StatusBadRequest:
		// RFC 8935 §2.3: the SET is invalid for the receiver; sending it
		// again changes nothing.
		var e struct {
			Err         string `json:"err"`
			Description string `json:"description"`
		}
		_ = json.Unmarshal(body, &e)
		return OutcomeRejected, fmt.Errorf("receiver: 400 %.64q %.256q", e.Err, e.Description)
	}
	return OutcomeFailed, fmt.Errorf("receiver: status %d", resp.StatusCode)
}
