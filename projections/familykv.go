package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// Defaults of the families read model.
const (
	// FamilyBucket is the KV bucket of the families read model.
	FamilyBucket = "TOKEN_FAMILIES"
	// FamilyConsumer is the durable consumer the projectors share.
	FamilyConsumer = "families_projector"
	// familyGroup is the consumer's priority group.
	familyGroup = "projector"
)

// ProjectorConfig configures a FamilyProjector. Every replica must use the
// same Bucket and Consumer.
type ProjectorConfig struct {
	// Sealer seals every value written (required): the bucket may live on
	// a NATS cluster others operate, and a value holds a subject, its
	// client, scopes and claims.
	Sealer *seal.Sealer
	// Observer, if set, is told of every operation on the bucket.
	Observer CacheObserver
	// OnBadEntry, if set, is told of every entry that does not open
	// (ErrEntryUnreadable); the projector replaces it with the family's
	// last state in the log.
	OnBadEntry func(key string, err error)
	// OnRebuild, if set, is told when the projector deletes a bucket of
	// plain values written by an earlier release, to rebuild it sealed.
	OnRebuild func()
	// Reseal makes the projector, once it has started, rewrite every entry
	// the Sealer reports for re-sealing (Sealer.NeedsReseal: sealed under
	// a previous ENCRYPTION_KEY, or in the format it no longer seals
	// with), from the family's last state in the log, so that the previous
	// keys can then be dropped. tokend sets it when ENCRYPTION_KEY_PREVIOUS
	// or CRYPTO_SERVICE_ADDRESS is set. Default off: the pass reads every
	// entry.
	Reseal bool
	// OnResealed, if set, is told how many entries the re-seal pass
	// rewrote.
	OnResealed func(n int)
	// Bucket is the KV bucket. Default FamilyBucket.
	Bucket string
	// Consumer is the durable consumer. Default FamilyConsumer.
	Consumer string
	// PinnedTTL is how long the pinned projector may stay silent before
	// another replica takes over. Default 5 s.
	PinnedTTL time.Duration
	// AckWait is how long an event delivered to a projector that died
	// waits before it is delivered again. Default 10 s.
	AckWait time.Duration
	// OnBadRecord, if set, is told of every record that does not decode
	// (it is skipped).
	OnBadRecord func(eventlog.Record, error)
	// OnError, if set, is told of every failure to set up the consumer or
	// to write the bucket (the projector retries).
	OnError func(error)
}

// FamilyProjector writes the families read model: one KV entry per family,
// key "<sid>.<fid>", value a FamilyRecord sealed with the configured
// Sealer, bound to the bucket and the key. Every replica runs one; a
// durable pull consumer with the pinned priority policy delivers the
// family events to exactly one of them at a time, and another takes over
// PinnedTTL after it stops pulling. Writes are idempotent by source
// sequence and compare-and-set on the entry's revision, so an event
// delivered twice (after a fail-over, or to two projectors while the pin
// moves) never replaces a later state with an earlier one.
//
// The command side never decides from this model: it is for listing a
// subject's sessions and for other services.
type FamilyProjector struct {
	log   *eventlog.Log
	js    jetstream.JetStream
	cfg   ProjectorConfig
	codec familyCodec

	applied atomic.Uint64 // events this projector wrote
}

// NewFamilyProjector returns a projector of log's family events. It
// returns an error if cfg has no Sealer.
func NewFamilyProjector(log *eventlog.Log, cfg ProjectorConfig) (*FamilyProjector, error) {
	if cfg.Sealer == nil {
		return nil, errors.New("projections: the families projector needs a sealer")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = FamilyBucket
	}
	if cfg.Consumer == "" {
		cfg.Consumer = FamilyConsumer
	}
	if cfg.PinnedTTL <= 0 {
		cfg.PinnedTTL = 5 * time.Second
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 10 * time.Second
	}
	return &FamilyProjector{log: log, js: log.JetStream(), cfg: cfg,
		codec: familyCodec{sealer: cfg.Sealer, bucket: cfg.Bucket, obs: cfg.Observer, onBad: cfg.OnBadEntry}}, nil
}

// Applied returns how many events this projector has written.
func (p *FamilyProjector) Applied() uint64 { return p.applied.Load() }

// Run projects until ctx ends. It creates the bucket and the consumer if
// they do not exist, and sets them up again if they are deleted (which is
// how the model is rebuilt: see DropFamilies). A bucket of plain values,
// written by a release that did not seal them, is deleted and rebuilt
// from the log.
func (p *FamilyProjector) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if p.cfg.Reseal {
		// Beside the projection, not before it: the pass may take a while
		// and needs no consumer; both write by compare-and-set.
		wg.Add(1)
		go func() { defer wg.Done(); p.resealOnce(ctx) }()
	}
	err := untilDone(ctx, p.run, p.cfg.OnError, 500*time.Millisecond)
	wg.Wait()
	return err
}

func (p *FamilyProjector) run(ctx context.Context) error {
	if err := p.upgrade(ctx); err != nil {
		return err
	}
	kv, err := p.js.CreateOrUpdateKeyValue(ctx, familyBucketConfig(p.cfg.Bucket, p.log.Replicas()))
	if err != nil {
		return fmt.Errorf("families bucket: %w", err)
	}
	cons, err := p.js.CreateOrUpdateConsumer(ctx, p.log.Stream(), jetstream.ConsumerConfig{
		Durable:        p.cfg.Consumer,
		Description:    "families read model projector",
		FilterSubject:  p.log.Subjects().Families(),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        p.cfg.AckWait,
		MaxAckPending:  1024,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PinnedTTL:      p.cfg.PinnedTTL,
		PriorityGroups: []string{familyGroup},
		Replicas:       p.log.Replicas(),
	})
	if err != nil {
		return fmt.Errorf("families consumer: %w", err)
	}
	// The creates end after the deliveries (defers run last first).
	cctx, cancel := context.WithCancel(ctx)
	c, wait := newCreates(cctx, p, kv)
	defer wait()
	defer cancel()
	return eventlog.ConsumeShared(ctx, cons, familyGroup, 256, func(m jetstream.Msg) { p.handle(ctx, kv, c, m) })
}

// handle writes the state an event carries, unless the entry already holds
// the state of this event or a later one: a family's first event through
// the pipeline of creates c, any other once the family's create (if one is
// in flight) is settled.
func (p *FamilyProjector) handle(ctx context.Context, kv jetstream.KeyValue, c *creates, m jetstream.Msg) {
	rec, err := p.log.RecordOf(m)
	if errors.Is(err, eventlog.ErrForged) {
		_ = m.Ack() // reported by the log; it becomes no state
		return
	}
	if err != nil {
		return
	}
	st, err := familyStateOf(rec)
	if err != nil {
		if p.cfg.OnBadRecord != nil {
			p.cfg.OnBadRecord(rec, err)
		}
		_ = m.Ack() // skipped, not lost: it stays in the log
		return
	}
	key := familyKey(st.GetSubject(), st.GetFamilyId())
	c.await(key)
	if rec.Prev == 0 && c.start(m, key, rec, st) {
		return // acknowledged once the create is settled
	}
	p.settle(ctx, kv, m, rec, st)
}

// settle writes the state st of rec, delivered as m, and acknowledges m,
// or asks for it again later if the write failed.
func (p *FamilyProjector) settle(ctx context.Context, kv jetstream.KeyValue, m jetstream.Msg, rec eventlog.Record, st *eventsv1.FamilyState) {
	if err := p.write(ctx, kv, rec, st); errors.Is(err, eventlog.ErrForged) {
		p.log.ReportForged(rec, err)
		_ = m.Ack() // refused: it becomes no state
		return
	} else if err != nil {
		if ctx.Err() != nil {
			_ = m.Nak() // stopping, not failing: the next projector takes it at once
			return
		}
		if p.cfg.OnError != nil {
			p.cfg.OnError(err)
		}
		_ = m.NakWithDelay(time.Second)
		return
	}
	p.applied.Add(1)
	_ = m.Ack()
}

// familyStateOf returns the family state rec carries, with the sequence
// of its issued event. It is decoded for the caller alone, who may change
// it (familyRecordOf does).
func familyStateOf(rec eventlog.Record) (*eventsv1.FamilyState, error) {
	ev, err := events.Decode(rec)
	if err != nil {
		return nil, err
	}
	st := events.FamilyStateOf(ev)
	if st == nil || !eventlog.ValidToken(st.GetFamilyId()) {
		return nil, fmt.Errorf("%w: %s: no family state", events.ErrBadRecord, rec.Type)
	}
	if st.GetIssuedSeq() == 0 {
		st.IssuedSeq = rec.Seq
	}
	return st, nil
}

func (p *FamilyProjector) write(ctx context.Context, kv jetstream.KeyValue, rec eventlog.Record, st *eventsv1.FamilyState) error {
	key := familyKey(st.GetSubject(), st.GetFamilyId())
	if rec.Prev == 0 {
		// The family's first event (its MAC chains it to no earlier one):
		// the entry is created without reading it first, which is what
		// the read below would decide for a key not found. An entry that
		// exists (the event delivered again, or the key reused) makes the
		// create fail, and the read below decides.
		err := p.put(ctx, kv, key, 0, rec, st)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return fmt.Errorf("families write %s: %w", key, err)
		}
	}
	for attempt := 0; ; attempt++ {
		entry, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			p.codec.observe(CacheRead, CacheMiss)
			if err := p.first(ctx, rec); errors.Is(err, eventlog.ErrNotFound) {
				return nil // the event expired meanwhile, and the family with it
			} else if err != nil {
				return err
			}
			err = p.put(ctx, kv, key, 0, rec, st)
		case err != nil:
			p.codec.observe(CacheRead, CacheError)
			return fmt.Errorf("families get %s: %w", key, err)
		default:
			cur, oerr := p.codec.open(key, entry.Value())
			switch {
			case errors.Is(oerr, ErrEntryUnreadable):
				// Counted and reported by open. What it held is unknown,
				// so neither idempotence nor the chain can be checked
				// against it: the log's last state of the family replaces
				// it, and the events before that one are skipped as
				// already held.
				_, err = p.repair(ctx, kv, key, entry.Revision(), st.GetFamilyId())
			case oerr != nil:
				return oerr // the crypto service: retried
			case cur.GetSourceSeq() >= rec.Seq:
				return nil // already holds this event or a later one
			case rec.Prev > cur.GetSourceSeq():
				// An event of the family between the entry's and this
				// one is still to be written (its write failed and it
				// will be delivered again): this one came early, it is
				// not a replay. The log's last state of the family,
				// which the log checks, is written instead; the earlier
				// event then finds a later state.
				_, err = p.repair(ctx, kv, key, entry.Revision(), st.GetFamilyId())
			default:
				if err := rec.Follows(cur.GetSourceSeq()); err != nil {
					return err
				}
				err = p.put(ctx, kv, key, entry.Revision(), rec, st)
			}
		}
		if err == nil {
			return nil
		}
		// Another projector wrote the entry in between (the pin moved):
		// read it again and decide again.
		if attempt < 5 && (errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err)) {
			continue
		}
		return fmt.Errorf("families write %s: %w", key, err)
	}
}

// repair replaces the entry of key at revision rev (one that does not
// open, or is to be re-sealed) with the last state of family fid in the
// log, and reports whether it wrote. A family no longer in the log leaves
// the entry as it is: its TTL removes it. An error of the log (a forged
// last record, reported by the log) is returned without its ErrForged,
// which is not about the event being handled.
func (p *FamilyProjector) repair(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64, fid string) (bool, error) {
	last, err := p.log.LastConsistent(ctx, p.log.Subjects().FamilyFilter(fid))
	if errors.Is(err, eventlog.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("families repair %s: last state: %v", key, err)
	}
	st, err := familyStateOf(last)
	if err != nil {
		return false, fmt.Errorf("families repair %s: %v", key, err)
	}
	if err := p.put(ctx, kv, key, rev, last, st); err != nil {
		return false, err
	}
	return true, nil
}

// put writes the state st of rec at key: created if rev is 0, else
// replaced by compare-and-set on rev. It counts the write.
func (p *FamilyProjector) put(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64, rec eventlog.Record, st *eventsv1.FamilyState) error {
	data, err := p.codec.seal(key, familyRecordOf(rec, st))
	if err != nil {
		p.codec.observe(CacheWrite, CacheError)
		return err
	}
	if rev == 0 {
		_, err = kv.Create(ctx, key, data, jetstream.KeyTTL(ttl(rec)))
	} else {
		_, err = p.update(ctx, kv, key, data, rev, ttl(rec))
	}
	switch {
	case err == nil:
		p.codec.observe(CacheWrite, CacheOK)
	case errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err):
		p.codec.observe(CacheWrite, CacheConflict)
	default:
		p.codec.observe(CacheWrite, CacheError)
	}
	return err
}

// first checks an event of a family the model does not hold: the family's
// first event, or the first one left in the log when the events before it
// have expired (Log.Chained).
func (p *FamilyProjector) first(ctx context.Context, rec eventlog.Record) error {
	if rec.Prev == 0 {
		return nil
	}
	return p.log.Chained(ctx, rec)
}

// ttl is the per-key TTL of an entry written now from rec: the entry
// leaves the bucket when rec, its family's last event, leaves the log
// (EVENT_RETENTION, family.RetainUntil); 0, never, for an event kept
// forever.
func ttl(rec eventlog.Record) time.Duration {
	if rec.TTL <= 0 {
		return 0
	}
	return eventlog.TTLUntil(rec.Time.Add(rec.TTL), time.Now())
}

// update is KeyValue.Update with a TTL (none if ttl is 0), which the
// client's Update does not take: the same message on the bucket's
// subject, with the same compare-and-set on the key's revision.
func (p *FamilyProjector) update(ctx context.Context, kv jetstream.KeyValue, key string, data []byte, rev uint64, ttl time.Duration) (uint64, error) {
	if ttl <= 0 {
		return kv.Update(ctx, key, data, rev)
	}
	ack, err := p.js.PublishMsg(ctx, &nats.Msg{Subject: p.kvSubject(key), Data: data},
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// kvSubject is the subject of key's entries in the bucket.
func (p *FamilyProjector) kvSubject(key string) string { return "$KV." + p.cfg.Bucket + "." + key }

// familyRecordOf is the entry written for the state st of rec (from
// familyStateOf); it strips st of what the read model must not hold.
func familyRecordOf(rec eventlog.Record, st *eventsv1.FamilyState) *eventsv1.FamilyRecord {
	return &eventsv1.FamilyRecord{State: withoutSecrets(st), SourceSeq: rec.Seq, UpdatedAt: timestamppb.New(rec.Time)}
}

// isWrongSequence reports whether err is a lost compare-and-set: 10071, or
// 10164 on a cluster (DESIGN rule 1).
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// withoutSecrets removes from st, and returns it, what the read model must
// not hold: the secret hashes and the grace record's ID. st is changed in
// place (no copy per event): it is the projector's own decoded state.
func withoutSecrets(st *eventsv1.FamilyState) *eventsv1.FamilyState {
	st.SecretHash = nil
	st.PreviousSecretHash = nil
	st.SpentSecretPrefixes = nil
	st.GraceId = ""
	return st
}

func familyBucketConfig(bucket string, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "token families read model (one projector writes it)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		// Per-key TTLs (an entry leaves with its event) need it; the marker a
		// key leaves when it expires is kept this long, so a watcher sees
		// the deletion.
		LimitMarkerTTL: familyMarkerTTL,
		Metadata:       map[string]string{familyFormatKey: familyFormatSealed},
	}
}

// familyMarkerTTL is how long the bucket keeps the marker of an expired
// entry.
const familyMarkerTTL = time.Hour

func familyKey(subject, fid string) string { return eventlog.SubjectID(subject) + "." + fid }
