package projections

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
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
// key "<sid>.<fid>", value a FamilyRecord. Every replica runs one; a
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
	log *eventlog.Log
	js  jetstream.JetStream
	cfg ProjectorConfig

	applied atomic.Uint64 // events this projector wrote
}

// NewFamilyProjector returns a projector of log's family events.
func NewFamilyProjector(log *eventlog.Log, cfg ProjectorConfig) *FamilyProjector {
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
	return &FamilyProjector{log: log, js: log.JetStream(), cfg: cfg}
}

// Applied returns how many events this projector has written.
func (p *FamilyProjector) Applied() uint64 { return p.applied.Load() }

// Run projects until ctx ends. It creates the bucket and the consumer if
// they do not exist, and sets them up again if they are deleted (which is
// how the model is rebuilt: see DropFamilies).
func (p *FamilyProjector) Run(ctx context.Context) error {
	return untilDone(ctx, p.run, p.cfg.OnError, 500*time.Millisecond)
}

func (p *FamilyProjector) run(ctx context.Context) error {
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
	failed := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) { p.handle(ctx, kv, m) },
		jetstream.PullPriorityGroup(familyGroup),
		jetstream.PullMaxMessages(256),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				select {
				case failed <- err:
				default:
				}
			}
		}))
	if err != nil {
		return fmt.Errorf("families consume: %w", err)
	}
	defer cc.Stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		return err
	}
}

// handle writes the state an event carries, unless the entry already holds
// the state of this event or a later one.
func (p *FamilyProjector) handle(ctx context.Context, kv jetstream.KeyValue, m jetstream.Msg) {
	rec, err := p.log.RecordOf(m)
	if errors.Is(err, eventlog.ErrForged) {
		_ = m.Ack() // reported by the log; it becomes no state
		return
	}
	if err != nil {
		return
	}
	ev, err := events.Decode(rec)
	st := events.FamilyStateOf(ev)
	if err == nil && (st == nil || !eventlog.ValidToken(st.GetFamilyId())) {
		err = fmt.Errorf("%w: %s: no family state", events.ErrBadRecord, rec.Type)
	}
	if err != nil {
		if p.cfg.OnBadRecord != nil {
			p.cfg.OnBadRecord(rec, err)
		}
		_ = m.Ack() // skipped, not lost: it stays in the log
		return
	}
	if st.GetIssuedSeq() == 0 {
		st = proto.Clone(st).(*eventsv1.FamilyState)
		st.IssuedSeq = rec.Seq
	}
	if err := p.write(ctx, kv, rec, st); errors.Is(err, eventlog.ErrForged) {
		p.log.ReportForged(rec, err)
		_ = m.Ack() // refused: it becomes no state
		return
	} else if err != nil {
		if p.cfg.OnError != nil {
			p.cfg.OnError(err)
		}
		_ = m.NakWithDelay(time.Second)
		return
	}
	p.applied.Add(1)
	_ = m.Ack()
}

func (p *FamilyProjector) write(ctx context.Context, kv jetstream.KeyValue, rec eventlog.Record, st *eventsv1.FamilyState) error {
	key := familyKey(st.GetSubject(), st.GetFamilyId())
	data, err := proto.Marshal(&eventsv1.FamilyRecord{State: publicState(st), SourceSeq: rec.Seq, UpdatedAt: timestamppb.New(rec.Time)})
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		entry, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if err := p.first(ctx, rec); errors.Is(err, eventlog.ErrNotFound) {
				return nil // the event expired meanwhile, and the family with it
			} else if err != nil {
				return err
			}
			_, err = kv.Create(ctx, key, data, jetstream.KeyTTL(ttl(rec)))
		case err != nil:
			return fmt.Errorf("families get %s: %w", key, err)
		default:
			var cur eventsv1.FamilyRecord
			if proto.Unmarshal(entry.Value(), &cur) == nil && cur.GetSourceSeq() >= rec.Seq {
				return nil // already holds this event or a later one
			}
			if err := rec.Follows(cur.GetSourceSeq()); err != nil {
				return err
			}
			_, err = p.update(ctx, kv, key, data, entry.Revision(), ttl(rec))
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
	ack, err := p.js.PublishMsg(ctx, &nats.Msg{Subject: "$KV." + p.cfg.Bucket + "." + key, Data: data},
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// publicState is st without what the read model must not hold: the secret
// hashes and the grace record's ID.
func publicState(st *eventsv1.FamilyState) *eventsv1.FamilyState {
	out := proto.Clone(st).(*eventsv1.FamilyState)
	out.SecretHash = nil
	out.PreviousSecretHash = nil
	out.SpentSecretPrefixes = nil
	out.GraceId = ""
	return out
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
	}
}

// familyMarkerTTL is how long the bucket keeps the marker of an expired
// entry.
const familyMarkerTTL = time.Hour

func familyKey(subject, fid string) string { return eventlog.SubjectID(subject) + "." + fid }

// FamilyStore reads the families read model.
type FamilyStore struct {
	js     jetstream.JetStream
	bucket string
}

// NewFamilyStore returns a reader of bucket (default FamilyBucket).
func NewFamilyStore(js jetstream.JetStream, bucket string) *FamilyStore {
	if bucket == "" {
		bucket = FamilyBucket
	}
	return &FamilyStore{js: js, bucket: bucket}
}

// ListFamilies returns the records of subject's families, oldest first. A
// bucket that does not exist yet holds no family.
func (s *FamilyStore) ListFamilies(ctx context.Context, subject string) ([]*eventsv1.FamilyRecord, error) {
	kv, err := s.js.KeyValue(ctx, s.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("families bucket: %w", err)
	}
	w, err := kv.WatchFiltered(ctx, []string{eventlog.SubjectID(subject) + ".*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("families list: %w", err)
	}
	defer func() { _ = w.Stop() }()
	latest := map[string]jetstream.KeyValueEntry{}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil { // every current value was delivered
				done = true
				break
			}
			if cur, ok := latest[e.Key()]; !ok || e.Revision() > cur.Revision() {
				latest[e.Key()] = e
			}
		}
	}
	out := make([]*eventsv1.FamilyRecord, 0, len(latest))
	for k, e := range latest {
		var r eventsv1.FamilyRecord
		if err := proto.Unmarshal(e.Value(), &r); err != nil {
			return nil, fmt.Errorf("%w: families entry %s: %v", events.ErrBadRecord, k, err)
		}
		if r.GetState().GetSubject() != subject {
			continue // a hash collision, in theory
		}
		out = append(out, &r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetState().GetIssuedSeq() < out[j].GetState().GetIssuedSeq() })
	return out, nil
}

// Progress returns the stream sequence up to which every family event has
// been written to the model, and how many events are still to be
// delivered to a projector.
func (s *FamilyStore) Progress(ctx context.Context, stream string) (ackFloor, pending uint64, err error) {
	cons, err := s.js.Consumer(ctx, stream, FamilyConsumer)
	if err != nil {
		return 0, 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	return info.AckFloor.Stream, info.NumPending + uint64(info.NumAckPending), nil
}

// DropFamilies deletes the read model so that the projectors rebuild it
// from the first event: it replaces the bucket with an empty one, then
// deletes the consumer, which every projector sets up again from the start
// of the stream. Entries written in between are rewritten (idempotently).
func DropFamilies(ctx context.Context, js jetstream.JetStream, stream string, replicas int) error {
	if err := js.DeleteKeyValue(ctx, FamilyBucket); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("delete families bucket: %w", err)
	}
	if _, err := js.CreateKeyValue(ctx, familyBucketConfig(FamilyBucket, replicas)); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
		return fmt.Errorf("create families bucket: %w", err)
	}
	if err := js.DeleteConsumer(ctx, stream, FamilyConsumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete families consumer: %w", err)
	}
	return nil
}
