package ssf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/signing/seal"
)

// store keeps the streams in a JetStream KV bucket, one sealed entry per
// stream (the push authorization header is a receiver's secret), written
// by compare-and-set on the entry's revision. Every replica watches the
// bucket into memory (cache) for the materializer and the push workers;
// the API reads and writes the bucket itself.
type store struct {
	kv     jetstream.KeyValue
	sealer *seal.Sealer
	bucket string

	mu      sync.Mutex
	cache   map[string]*record
	rev     uint64        // the bucket's last revision applied to cache
	changed chan struct{} // closed (and replaced) when cache changes
}

func openStore(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, sealer *seal.Sealer) (*store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucket, Description: "Shared Signals streams (tokend)", History: 1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1), MaxValueSize: 256 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("ssf streams bucket: %w", err)
	}
	return &store{kv: kv, sealer: sealer, bucket: bucket, cache: map[string]*record{}, changed: make(chan struct{})}, nil
}

func (s *store) aad(id string) []byte { return []byte("ssf-stream\x00" + s.bucket + "\x00" + id) }

func (s *store) decode(id string, v []byte) (*record, error) {
	plain, err := s.sealer.Open(v, s.aad(id))
	if err != nil {
		return nil, fmt.Errorf("ssf stream %s: open: %w", id, err)
	}
	var r record
	if err := json.Unmarshal(plain, &r); err != nil {
		return nil, fmt.Errorf("ssf stream %s: %w", id, err)
	}
	return &r, nil
}

func (s *store) encode(r *record) ([]byte, error) {
	plain, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return s.sealer.Seal(plain, s.aad(r.ID))
}

// get returns stream id and its revision, or ErrStreamNotFound.
func (s *store) get(ctx context.Context, id string) (*record, uint64, error) {
	if !validID(id) {
		return nil, 0, ErrStreamNotFound
	}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrStreamNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("ssf stream %s: %w", id, err)
	}
	r, err := s.decode(id, e.Value())
	return r, e.Revision(), err
}

func (s *store) create(ctx context.Context, r *record) error {
	v, err := s.encode(r)
	if err != nil {
		return err
	}
	if _, err := s.kv.Create(ctx, r.ID, v); err != nil {
		return fmt.Errorf("ssf stream %s: create: %w", r.ID, err)
	}
	return nil
}

// update applies fn to stream id and writes the result by compare-and-set,
// again from a fresh read when another replica wrote in between. fn
// decides from the record alone (it may run more than once); it returns
// ErrStreamNotFound to hide a stream.
func (s *store) update(ctx context.Context, id string, fn func(*record) error) (*record, error) {
	for range 5 {
		r, rev, err := s.get(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := fn(r); err != nil {
			return nil, err
		}
		v, err := s.encode(r)
		if err != nil {
			return nil, err
		}
		_, err = s.kv.Update(ctx, id, v, rev)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return nil, fmt.Errorf("ssf stream %s: update: %w", id, err)
		}
	}
	return nil, ErrConflict
}

func (s *store) delete(ctx context.Context, id string, rev uint64) error {
	if err := s.kv.Delete(ctx, id, jetstream.LastRevision(rev)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return ErrConflict
		}
		return fmt.Errorf("ssf stream %s: delete: %w", id, err)
	}
	return nil
}

// firstOwed returns the first log sequence a stream in the bucket may be
// owed (the least AfterSeq, plus one; read from the bucket, not the
// cache); ok is false when there is no stream.
func (s *store) firstOwed(ctx context.Context) (seq uint64, ok bool, err error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("ssf streams: %w", err)
	}
	for id := range lister.Keys() {
		r, _, err := s.get(ctx, id)
		if errors.Is(err, ErrStreamNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return 0, false, err
		}
		if !ok || r.AfterSeq+1 < seq {
			seq, ok = r.AfterSeq+1, true
		}
	}
	return seq, ok, nil
}

// watch keeps cache up to date until ctx ends.
func (s *store) watch(ctx context.Context, onBad func(error)) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("ssf streams watch: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("ssf streams watch ended")
			}
			if e == nil {
				continue // the initial values are in
			}
			var r *record
			if e.Operation() == jetstream.KeyValuePut {
				if r, err = s.decode(e.Key(), e.Value()); err != nil && onBad != nil {
					onBad(err)
				}
			}
			s.mu.Lock()
			if r != nil {
				s.cache[e.Key()] = r
			} else {
				delete(s.cache, e.Key())
			}
			s.rev = max(s.rev, e.Revision())
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
		}
	}
}

// snapshot returns every stream, sorted by ID, once the cache holds every
// write the bucket had when snapshot was called: a stream created before
// a log event is seen by the materializer when it handles the event.
func (s *store) snapshot(ctx context.Context) ([]*record, error) {
	st, err := s.kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("ssf streams status: %w", err)
	}
	var last uint64
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		last = bs.StreamInfo().State.LastSeq
	}
	for {
		s.mu.Lock()
		if s.rev >= last {
			out := make([]*record, 0, len(s.cache))
			for _, r := range s.cache {
				out = append(out, r)
			}
			s.mu.Unlock()
			slices.SortFunc(out, func(a, b *record) int { return strings.Compare(a.ID, b.ID) })
			return out, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// cached returns the cached stream id, or nil.
func (s *store) cached(id string) *record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache[id]
}

// changes returns a channel closed at the next change of the cache.
func (s *store) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// validID reports whether id can be a stream ID: what newID makes.
func validID(id string) bool {
	if len(id) != 22 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// isWrongSequence reports a compare-and-set lost to another writer.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
