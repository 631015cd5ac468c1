package projections

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// StoreConfig configures a FamilyStore.
type StoreConfig struct {
	// Sealer opens the values (required): the projector's.
	Sealer *seal.Sealer
	// Bucket is the KV bucket. Default FamilyBucket.
	Bucket string
	// Observer, if set, is told of every read.
	Observer CacheObserver
	// OnBadEntry, if set, is told of every entry that does not open
	// (ErrEntryUnreadable).
	OnBadEntry func(key string, err error)
}

// FamilyStore reads the families read model. It is safe for concurrent
// use.
type FamilyStore struct {
	js    jetstream.JetStream
	codec familyCodec
}

// NewFamilyStore returns a reader of the families bucket. It returns an
// error if cfg has no Sealer.
func NewFamilyStore(js jetstream.JetStream, cfg StoreConfig) (*FamilyStore, error) {
	if cfg.Sealer == nil {
		return nil, errors.New("projections: the families store needs a sealer")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = FamilyBucket
	}
	return &FamilyStore{js: js, codec: familyCodec{sealer: cfg.Sealer, bucket: cfg.Bucket, obs: cfg.Observer, onBad: cfg.OnBadEntry}}, nil
}

// ListFamilies returns the records of subject's families, oldest first. A
// bucket that does not exist yet holds no family. An entry that does not
// open is never served: the listing fails with an error wrapping
// ErrEntryUnreadable, rather than leave out a session an administrator
// may be looking for.
func (s *FamilyStore) ListFamilies(ctx context.Context, subject string) ([]*eventsv1.FamilyRecord, error) {
	kv, err := s.js.KeyValue(ctx, s.codec.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		s.codec.observe(CacheRead, CacheMiss)
		return nil, nil
	}
	if err != nil {
		s.codec.observe(CacheRead, CacheError)
		return nil, fmt.Errorf("families bucket: %w", err)
	}
	w, err := kv.WatchFiltered(ctx, []string{eventlog.SubjectID(subject) + ".*"}, jetstream.IgnoreDeletes())
	if err != nil {
		s.codec.observe(CacheRead, CacheError)
		return nil, fmt.Errorf("families list: %w", err)
	}
	defer func() { _ = w.Stop() }()
	latest := map[string]jetstream.KeyValueEntry{}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return nil, ctx.Err() // the caller's: not an operation that failed
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
	if len(latest) == 0 {
		s.codec.observe(CacheRead, CacheMiss)
		return nil, nil
	}
	out := make([]*eventsv1.FamilyRecord, 0, len(latest))
	for k, e := range latest {
		r, err := s.codec.open(k, e.Value())
		if err != nil {
			return nil, err
		}
		if r.GetState().GetSubject() != subject {
			continue // a hash collision, in theory
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetState().GetIssuedSeq() < out[j].GetState().GetIssuedSeq() })
	return out, nil
}

// Progress returns the stream sequence up to which every family event has
// been written to the model, and how many events are still to be
// delivered to a projector (FamiliesProgress).
func (s *FamilyStore) Progress(ctx context.Context, stream string) (ackFloor, pending uint64, err error) {
	return FamiliesProgress(ctx, s.js, stream)
}

// FamiliesProgress returns the stream sequence up to which every family
// event has been written to the model, and how many events are still to
// be delivered to a projector. It reads the consumer, not the values, so
// it needs no sealer.
func FamiliesProgress(ctx context.Context, js jetstream.JetStream, stream string) (ackFloor, pending uint64, err error) {
	cons, err := js.Consumer(ctx, stream, FamilyConsumer)
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
	return dropFamilies(ctx, js, FamilyBucket, FamilyConsumer, stream, replicas)
}

func dropFamilies(ctx context.Context, js jetstream.JetStream, bucket, consumer, stream string, replicas int) error {
	if err := js.DeleteKeyValue(ctx, bucket); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("delete families bucket: %w", err)
	}
	if _, err := js.CreateKeyValue(ctx, familyBucketConfig(bucket, replicas)); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
		return fmt.Errorf("create families bucket: %w", err)
	}
	if err := js.DeleteConsumer(ctx, stream, consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete families consumer: %w", err)
	}
	return nil
}
