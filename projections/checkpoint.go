package projections

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	checkpointv1 "github.com/auth-platform/tokenservice/proto/token/checkpoint/v1"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// Checkpoints of the in-memory projections.
//
// A replica that starts loads the newest checkpoint, replays the key
// aggregate up to its position and then the tail of the log after it, so
// that it starts in time proportional to what is live (a checkpoint holds
// only what has not ended: see Set's pruning) plus what happened since the
// checkpoint, not to the whole history. Any replica writes one when the log
// has moved on by a quarter of what it holds (so that writing them costs a
// constant per event), at most once per interval, and once more when it
// stops.
//
// A checkpoint is sealed with the service's sealer (ENCRYPTION_KEY) and
// bound to the stream (its name and creation time) and to its position,
// so nobody without the service's key can make one, and one cannot be
// moved to another stream or position. A checkpoint that is missing, of
// another version, of another stream, ahead of the stream, or that does not
// open, is not used: the replica replays the log in full, and says why
// (CheckpointConfig.OnLoad).
const (
	// CheckpointBucket is the object store of the checkpoints.
	CheckpointBucket = "TOKEN_CHECKPOINTS"
	// checkpointObject is the one object the bucket holds.
	checkpointObject = "projections"

	metaSeq     = "seq"
	metaCreated = "stream-created"
)

// Outcomes of Checkpoints.Load, the values of its metric's label.
const (
	LoadRestored = "restored" // the set holds the checkpoint; the runner replays the tail
	LoadMissing  = "missing"  // no checkpoint yet: full replay
	LoadStale    = "stale"    // another version, another stream, or ahead of it: full replay
	LoadCorrupt  = "corrupt"  // it does not open or decode: full replay
	LoadFailed   = "failed"   // the store could not be read: full replay
)

// loadTimeout bounds Load: past it, the replica replays the log in full.
const loadTimeout = 15 * time.Second

// LoadOutcomes are the outcomes of Load.
var LoadOutcomes = []string{LoadRestored, LoadMissing, LoadStale, LoadCorrupt, LoadFailed}

// CheckpointConfig configures Checkpoints.
type CheckpointConfig struct {
	// Sealer seals the checkpoints (required).
	Sealer *seal.Sealer
	// Bucket is the object store. Default CheckpointBucket.
	Bucket string
	// Interval is how often Run considers writing a checkpoint and a
	// tick. Default 1 minute.
	Interval time.Duration
	// Now is the clock that tells when a tick is due. Default time.Now.
	Now func() time.Time
	// Tick, if set, appends a tick (events.LogTick): Run calls it when
	// something held ended more than an Interval ago and no event has let
	// the set forget it, that is when the log is quiet.
	Tick func(context.Context) error
	// OnLoad, if set, is told the outcome of Load, the position restored
	// (0 unless restored), and why a checkpoint was not used.
	OnLoad func(outcome string, seq uint64, err error)
	// OnSave, if set, is told of every checkpoint written or failed.
	OnSave func(seq uint64, size int, took time.Duration, err error)
}

// Checkpoints writes and loads the checkpoints of one Set.
type Checkpoints struct {
	log   *eventlog.Log
	set   *Set
	cfg   CheckpointConfig
	saved atomic.Uint64 // position of the newest checkpoint known
	obs   atomic.Pointer[jetstream.ObjectStore]
}

// NewCheckpoints returns the checkpoints of set, which log feeds.
func NewCheckpoints(log *eventlog.Log, set *Set, cfg CheckpointConfig) (*Checkpoints, error) {
	if cfg.Sealer == nil {
		return nil, errors.New("projections: checkpoints need a sealer")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = CheckpointBucket
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Checkpoints{log: log, set: set, cfg: cfg}, nil
}

// store returns the object store, creating it the first time a checkpoint
// is written; Load only looks it up.
func (c *Checkpoints) store(ctx context.Context) (jetstream.ObjectStore, error) {
	if obs := c.obs.Load(); obs != nil {
		return *obs, nil
	}
	obs, err := c.log.JetStream().CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: c.cfg.Bucket, Description: "tokend projections checkpoints (sealed)",
		Storage: jetstream.FileStorage, Replicas: max(c.log.Replicas(), 1),
	})
	if err != nil {
		return nil, err
	}
	c.obs.Store(&obs)
	return obs, nil
}

// aad binds a checkpoint to the stream and to its position.
func (c *Checkpoints) aad(created time.Time, seq uint64) []byte {
	return fmt.Appendf(nil, "tokend projections checkpoint|v%d|%s|%d|%d", CheckpointVersion, c.log.Stream(), created.UnixNano(), seq)
}

// Load restores the newest checkpoint into the set, which must be empty
// and not fed yet, and returns the outcome. Whatever it is, the set is
// ready to be fed from Seq()+1: restored, or empty for a full replay.
func (c *Checkpoints) Load(ctx context.Context) string {
	// A cluster that cannot answer (a meta leader being elected) must not
	// hold the start: after loadTimeout the replica replays in full.
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	outcome, seq, err := c.load(ctx)
	if c.cfg.OnLoad != nil {
		c.cfg.OnLoad(outcome, seq, err)
	}
	return outcome
}

func (c *Checkpoints) load(ctx context.Context) (string, uint64, error) {
	created, last, err := c.log.Identity(ctx)
	if err != nil {
		return LoadFailed, 0, err
	}
	// Looked up in short tries (Log.Provision): the bucket's stream, idle
	// between checkpoints, may have no leader for seconds after its
	// leader's node restarted, and a request sent before the election is
	// never answered; one request bounded by the whole of loadTimeout
	// would wait it out even when a leader is elected at once.
	var obs jetstream.ObjectStore
	missing := false
	err = c.log.Provision(ctx, func(ctx context.Context) (err error) {
		obs, err = c.log.JetStream().ObjectStore(ctx, c.cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			missing = true
			return nil
		}
		return err
	})
	if missing {
		return LoadMissing, 0, nil
	}
	if err != nil {
		return LoadFailed, 0, fmt.Errorf("checkpoint store: %w", err)
	}
	info, err := obs.GetInfo(ctx, checkpointObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return LoadMissing, 0, nil
	}
	if err != nil {
		return LoadFailed, 0, fmt.Errorf("checkpoint: %w", err)
	}
	seq, ours, err := labelOf(info, created)
	if err != nil {
		return LoadCorrupt, 0, err
	}
	if !ours {
		return LoadStale, 0, fmt.Errorf("checkpoint of another stream %s (created %s, this one %d)",
			c.log.Stream(), info.Metadata[metaCreated], created.UnixNano())
	}
	c.saved.Store(seq)
	if seq > last {
		return LoadStale, 0, fmt.Errorf("checkpoint at %d, after the stream's last message %d", seq, last)
	}
	sealed, err := obs.GetBytes(ctx, checkpointObject)
	if err != nil {
		return LoadFailed, 0, fmt.Errorf("checkpoint: %w", err)
	}
	data, err := c.cfg.Sealer.Open(sealed, c.aad(created, seq))
	if err != nil {
		return LoadCorrupt, 0, fmt.Errorf("checkpoint does not open: %w", err)
	}
	cp := &checkpointv1.Checkpoint{}
	if err := proto.Unmarshal(data, cp); err != nil {
		return LoadCorrupt, 0, fmt.Errorf("checkpoint does not decode: %w", err)
	}
	if cp.GetSeq() != seq {
		return LoadCorrupt, 0, fmt.Errorf("checkpoint at %d labelled %d", cp.GetSeq(), seq)
	}
	if cp.GetVersion() != CheckpointVersion {
		return LoadStale, 0, fmt.Errorf("checkpoint version %d, this build reads %d", cp.GetVersion(), CheckpointVersion)
	}
	var keys []eventlog.Record
	if err := c.log.Replay(ctx, 1, []string{c.log.Subjects().Keys()}, func(rec eventlog.Record) { keys = append(keys, rec) }); err != nil {
		return LoadFailed, 0, fmt.Errorf("replay the keys: %w", err)
	}
	if err := c.set.restore(cp, keys); err != nil {
		return LoadCorrupt, 0, err
	}
	return LoadRestored, seq, nil
}

// Save writes a checkpoint of the set as it is now, unless the newest
// one is at or after its position.
func (c *Checkpoints) Save(ctx context.Context) error {
	start := time.Now()
	seq, size, err := c.save(ctx)
	if c.cfg.OnSave != nil && (seq != 0 || err != nil) {
		c.cfg.OnSave(seq, size, time.Since(start), err)
	}
	return err
}

func (c *Checkpoints) save(ctx context.Context) (uint64, int, error) {
	created, _, err := c.log.Identity(ctx)
	if err != nil {
		return 0, 0, err
	}
	obs, err := c.store(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("checkpoint store: %w", err)
	}
	if info, err := obs.GetInfo(ctx, checkpointObject); err == nil {
		if seq, ours, err := labelOf(info, created); err == nil && ours {
			c.saved.Store(max(c.saved.Load(), seq)) // another replica wrote it
		}
	}
	cp := c.set.snapshot()
	if cp.GetSeq() <= c.saved.Load() {
		return 0, 0, nil
	}
	data, err := marshalCheckpoint(cp)
	if err != nil {
		return 0, 0, err
	}
	sealed, err := c.cfg.Sealer.Seal(data, c.aad(created, cp.GetSeq()))
	if err != nil {
		return 0, 0, fmt.Errorf("seal the checkpoint: %w", err)
	}
	_, err = obs.Put(ctx, jetstream.ObjectMeta{Name: checkpointObject, Metadata: label(cp.GetSeq(), created)}, bytes.NewReader(sealed))
	if err != nil {
		return cp.GetSeq(), len(sealed), fmt.Errorf("write the checkpoint: %w", err)
	}
	c.saved.Store(cp.GetSeq())
	return cp.GetSeq(), len(sealed), nil
}

// label is the metadata a checkpoint is stored with: its position and the
// creation time of its stream.
func label(seq uint64, created time.Time) map[string]string {
	return map[string]string{metaSeq: strconv.FormatUint(seq, 10), metaCreated: strconv.FormatInt(created.UnixNano(), 10)}
}

// labelOf reads label back: the position, and whether the checkpoint is
// of the stream created at created.
func labelOf(info *jetstream.ObjectInfo, created time.Time) (seq uint64, ours bool, err error) {
	seq, err = strconv.ParseUint(info.Metadata[metaSeq], 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("checkpoint position %q: %w", info.Metadata[metaSeq], err)
	}
	return seq, info.Metadata[metaCreated] == strconv.FormatInt(created.UnixNano(), 10), nil
}

// due reports whether the log moved on, since the newest checkpoint, by a
// quarter of what the set holds (at least one record).
func (c *Checkpoints) due() bool {
	seq, saved := c.set.Seq(), c.saved.Load()
	return seq > saved && seq-saved >= uint64(c.set.Len())/4
}

// Run writes checkpoints when they are due and ticks when the log is
// quiet, until ctx ends; then it writes a last checkpoint if the log moved
// on. Failures are reported to OnSave and retried at the next interval.
func (c *Checkpoints) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// A last checkpoint for the next start, unless the connection
			// is down: it could not be written, and the stop would wait
			// the whole bound for nothing.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if c.set.Seq() > c.saved.Load() && c.log.JetStream().Conn().IsConnected() {
				_ = c.Save(sctx) // reported to OnSave
			}
			return nil
		case <-t.C:
		}
		if end, ok := c.set.NextEnd(); ok && c.cfg.Tick != nil && c.cfg.Now().After(end.Add(c.cfg.Interval)) {
			if err := c.cfg.Tick(ctx); err != nil && ctx.Err() == nil && c.cfg.OnSave != nil {
				c.cfg.OnSave(0, 0, 0, fmt.Errorf("tick: %w", err))
			}
		}
		if c.due() {
			_ = c.Save(ctx) // reported to OnSave
		}
	}
}
