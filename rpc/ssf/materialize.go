package ssf

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog"
)

// materializerGroup is the priority group of the log's durable consumer.
const materializerGroup = "ssf"

// materialize makes the SETs of every log record the transmitter reads,
// once per stream that wants it, into the queue, until ctx ends. The
// records come from one durable consumer shared by every replica, pinned
// to one of them, with one record in flight: a record is acknowledged
// once the SETs of every stream are queued, so a replica killed part-way
// leaves it to be handled again (by another replica after PinnedTTL), and
// the SETs it had queued are not stored twice (same jti, same
// Nats-Msg-Id). Records are handled in log order.
func (s *Service) materialize(ctx context.Context) error {
	for {
		err := s.materializeOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.cfg.Logger.Warn("ssf: reading the log; retrying", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (s *Service) materializeOnce(ctx context.Context) error {
	cons, err := s.ensureConsumer(ctx)
	if err != nil {
		return err
	}
	return eventlog.ConsumeShared(ctx, cons, materializerGroup, 16, func(m jetstream.Msg) { s.handleRecord(ctx, m) })
}

// ensureConsumer creates the log's durable consumer, or updates it
// keeping where it starts. New calls it before a stream can be created.
// A new consumer starts after the oldest start of the streams that exist
// (the first event one of them may still be owed: the consumer was
// deleted, as an ENCRYPTION_KEY rotation on the embedded server does), or
// at the log's end when there are none.
func (s *Service) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:        s.cfg.Consumer,
		Description:    "Shared Signals: SETs from the log",
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		FilterSubjects: Filters(s.log.Subjects()),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        5 * time.Second, // a killed replica's record is handled again soon
		MaxAckPending:  1,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PinnedTTL:      5 * time.Second,
		PriorityGroups: []string{materializerGroup},
		Replicas:       s.log.Replicas(),
	}
	js := s.log.JetStream()
	have, err := js.Consumer(ctx, s.log.Stream(), s.cfg.Consumer)
	switch {
	case err == nil:
		// Where a consumer starts cannot be changed; keep it.
		cfg.DeliverPolicy = have.CachedInfo().Config.DeliverPolicy
		cfg.OptStartSeq = have.CachedInfo().Config.OptStartSeq
		cfg.OptStartTime = have.CachedInfo().Config.OptStartTime
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		from, ok, err := s.store.firstOwed(ctx)
		if err != nil {
			return nil, err
		}
		if ok {
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = from
		}
	default:
		return nil, fmt.Errorf("ssf consumer: %w", err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, s.log.Stream(), cfg)
	if err != nil {
		return nil, fmt.Errorf("ssf consumer: %w", err)
	}
	return cons, nil
}

func (s *Service) handleRecord(ctx context.Context, m jetstream.Msg) {
	rec, err := s.log.RecordOf(m)
	if errors.Is(err, eventlog.ErrForged) {
		_ = m.Ack() // reported by the log; it becomes no event
		return
	}
	if err != nil {
		_ = m.NakWithDelay(time.Second)
		return
	}
	if err := s.materializeRecord(ctx, rec); err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.Warn("ssf: making SETs; retrying", "seq", rec.Seq, "error", err)
		}
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

// materializeRecord queues the SETs of rec for every stream that wants it.
func (s *Service) materializeRecord(ctx context.Context, rec eventlog.Record) error {
	sig, err := signalOf(rec, s.cfg.TokenIssuer)
	if err != nil {
		s.cfg.Logger.Error("ssf: skipped a log record that does not decode", "seq", rec.Seq, "subject", rec.Subject, "error", err)
		return nil // skipped, not lost: it stays in the log
	}
	if sig == nil {
		return nil
	}
	streams, err := s.store.snapshot(ctx)
	if err != nil {
		return err
	}
	s.backlog.forget(streams)
	for _, r := range streams {
		if !wants(r, sig) {
			continue
		}
		if ok, err := s.backlog.admit(ctx, r.ID); err != nil {
			return err
		} else if !ok {
			s.metrics.dropped(DroppedStreamBacklog)
			continue
		}
		if err := s.enqueue(ctx, r, sig, jtiOf(r.ID, rec.Seq, "")); err != nil {
			return err
		}
		s.backlog.queued(r.ID)
	}
	return nil
}

// issuerOf is the iss of stream r's SETs: the issuer its receiver
// discovered, or the configured one for a stream that recorded none.
func (s *Service) issuerOf(r *record) string {
	if r.Iss != "" {
		return r.Iss
	}
	return s.cfg.Issuer
}

// enqueue signs sig for stream r with jti and queues it.
func (s *Service) enqueue(ctx context.Context, r *record, sig *signal, jti string) error {
	signer, err := s.cfg.Keys.Active(ctx)
	if err != nil {
		return fmt.Errorf("ssf: signing key: %w", err)
	}
	if sig.NotSignedBy != "" && signer.KeyID() == sig.NotSignedBy {
		// The compromise is declared before the key is replaced: wait for
		// the new key (the record is handled again), or the SET would
		// leave the JWKS with the key.
		return fmt.Errorf("ssf: key %s is compromised and still active", sig.NotSignedBy)
	}
	set, err := signSET(ctx, signer, s.issuerOf(r), r, sig, jti, s.cfg.Now())
	if err != nil {
		return err
	}
	if err := s.queue.put(ctx, r.ID, jti, set); err != nil {
		return err
	}
	s.metrics.made(sig.Type)
	return nil
}
