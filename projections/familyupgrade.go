package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// resealOnce runs the re-seal pass until it completes once (told to
// OnResealed) or ctx ends; each failure is told to OnError.
func (p *FamilyProjector) resealOnce(ctx context.Context) {
	for {
		n, err := p.reseal(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if p.cfg.OnResealed != nil {
				p.cfg.OnResealed(n)
			}
			return
		}
		if p.cfg.OnError != nil {
			p.cfg.OnError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// reseal rewrites every entry that Sealer.NeedsReseal reports, from the
// family's last state in the log (repair), and returns how many it
// rewrote. An entry another projector replaced meanwhile was sealed under
// the current key: it is left as it is.
func (p *FamilyProjector) reseal(ctx context.Context) (int, error) {
	kv, err := p.js.KeyValue(ctx, p.cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, nil // nothing sealed yet
	}
	if err != nil {
		return 0, fmt.Errorf("families reseal: %w", err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		p.codec.observe(CacheRead, CacheError)
		return 0, fmt.Errorf("families reseal: list: %w", err)
	}
	var keys []string
	for k := range lister.Keys() { // closed once every key was listed, or ctx ended
		keys = append(keys, k)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, key := range keys {
		entry, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			p.codec.observe(CacheRead, CacheMiss) // expired meanwhile
			continue
		case err != nil:
			p.codec.observe(CacheRead, CacheError)
			return n, fmt.Errorf("families reseal: get %s: %w", key, err)
		}
		p.codec.observe(CacheRead, CacheOK) // read, not opened: repair reads the log
		if !p.cfg.Sealer.NeedsReseal(entry.Value()) {
			continue
		}
		_, fid, _ := strings.Cut(key, ".")
		written, err := p.repair(ctx, kv, key, entry.Revision(), fid)
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("families reseal: %w", err)
		}
		if written {
			n++
		}
	}
	return n, nil
}

// upgrade deletes the bucket and the consumer when the bucket holds
// values but does not say they are sealed: an earlier release wrote them
// in clear, and they would never open. The model is derived from the log,
// so it is rebuilt rather than converted (DropFamilies): a value of the
// old format is never trusted, even once. Two replicas that upgrade at
// once both drop it; each drop starts the rebuild again, which is
// idempotent. An empty bucket only gains the marker (run updates its
// configuration).
func (p *FamilyProjector) upgrade(ctx context.Context) error {
	kv, err := p.js.KeyValue(ctx, p.cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("families bucket: %w", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("families bucket: %w", err)
	}
	if st.Metadata()[familyFormatKey] == familyFormatSealed || st.Values() == 0 {
		return nil
	}
	if p.cfg.OnRebuild != nil {
		p.cfg.OnRebuild()
	}
	if err := dropFamilies(ctx, p.js, p.cfg.Bucket, p.cfg.Consumer, p.log.Stream(), p.log.Replicas()); err != nil {
		p.codec.observe(CacheDelete, CacheError)
		return err
	}
	p.codec.observe(CacheDelete, CacheOK)
	return nil
}
