package subscriber

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/auth-platform/tokenservice/issuer/family"
)

// Config configures a Subscriber. Its zero value reads the token service's
// default feed with a consumer of a random name.
type Config struct {
	// Stream is the feed's stream. Default DefaultStream (TOKENS_FEED).
	Stream string
	// Prefix is the subject prefix of the token service's log
	// (NATS_SUBJECT_PREFIX); the feed's subjects are under <prefix>feed.
	// Default "token".
	Prefix string
	// Consumer names the consumer the subscriber reads through. On the
	// token service's embedded server it must be the subscriber user's
	// public nkey (U...), the only consumer that user may manage. Default:
	// a random name, for servers where a reader may name any consumer.
	// One Consumer serves one reader at a time: a second reader with the
	// same name replaces the first's consumer.
	Consumer string
	// AccessTTL is the longest access-token lifetime the service issues
	// (its ACCESS_TOKEN_TTL). Default 15 minutes.
	AccessTTL time.Duration
	// OnRevocation, if set, is called with each revocation once IsRevoked
	// reflects it, in stream order, on one goroutine.
	OnRevocation func(Revocation)
	// OnKey, if set, is called with each key event, in stream order, on
	// the goroutine of OnRevocation.
	OnKey func(Key)
	// OnCaughtUp, if set, is called once every message that existed when
	// reading started has been delivered (at once if there were none):
	// from then on, new ones arrive as they are written.
	OnCaughtUp func()
	// Now is the clock that prunes expired entries. Default time.Now.
	Now func() time.Time
	// OnError, if set, is told of every error the reader recovers from by
	// itself: its consumer failed and is set up again, or a feed message
	// it cannot decode was skipped (wrapping ErrBadMessage). Reading goes
	// on either way; it lets the owner count or log them. It is called
	// from the reader's goroutines and must not block. Default: none.
	OnError func(error)
}

// report tells OnError, if set, of err.
func (c *Config) report(err error) {
	if c.OnError != nil {
		c.OnError(err)
	}
}

func (c *Config) setDefaults() {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.AccessTTL <= 0 {
		c.AccessTTL = 15 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Claims are the access-token claims a revocation check needs.
type Claims struct {
	Subject  string    // sub
	FamilyID string    // sid
	IssuedAt time.Time // iat
}

// Subscriber keeps the revocation set. It is safe for concurrent use.
type Subscriber struct {
	js  jetstream.JetStream
	cfg Config

	mu       sync.RWMutex
	families map[string]time.Time // family ID → when its last access token expires
	cutoffs  map[string]time.Time // subject → cut-off
	seq      uint64               // last feed sequence applied

	pending   atomic.Uint64
	ready     chan struct{}
	readyOnce sync.Once
}

// New returns a subscriber reading over nc; call Run.
func New(nc *nats.Conn, cfg Config) (*Subscriber, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("subscriber: jetstream: %w", err)
	}
	cfg.setDefaults()
	return &Subscriber{js: js, cfg: cfg, families: map[string]time.Time{}, cutoffs: map[string]time.Time{}, ready: make(chan struct{})}, nil
}

// leeway covers the clock difference between the service and this process.
const leeway = time.Minute

// nowLeeway is how far before now a watch "from now" starts.
const nowLeeway = 2 * time.Second

// retryEvery is how long a reader waits before it sets its consumer up
// again.
const retryEvery = 250 * time.Millisecond

// Run follows the feed until ctx ends, resuming after the last message
// applied whenever the consumer has to be set up again (the connection or
// the stream's leader went away).
func (s *Subscriber) Run(ctx context.Context) error {
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		s.mu.RLock()
		after := s.seq
		s.mu.RUnlock()
		start := Start{AfterSeq: after}
		if after == 0 {
			start = Start{Since: s.cfg.Now().Add(-s.cfg.AccessTTL - leeway)}
		}
		err := watch(ctx, s.js, s.cfg, start, s.apply, func() {
			s.readyOnce.Do(func() {
				close(s.ready)
				if s.cfg.OnCaughtUp != nil {
					s.cfg.OnCaughtUp()
				}
			})
		}, prune.C, s.prune)
		if err != nil && ctx.Err() == nil {
			s.cfg.report(fmt.Errorf("%w; setting the consumer up again", err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryEvery):
		}
	}
}

func (s *Subscriber) apply(seq, pending uint64, r *Revocation, k *Key) {
	// What no live token can need is not kept (the feed may hold years
	// of revocations written recently, after an upgrade).
	horizon := s.cfg.Now().Add(-leeway)
	s.mu.Lock()
	switch {
	case r != nil && r.FamilyID != "":
		if !r.AccessExpiresAt.Before(horizon) {
			s.families[r.FamilyID] = r.AccessExpiresAt
		}
	case r != nil:
		if cur, ok := s.cutoffs[r.Subject]; (!ok || r.RevokedAt.After(cur)) && !r.RevokedAt.Add(s.cfg.AccessTTL).Before(horizon) {
			s.cutoffs[r.Subject] = r.RevokedAt
		}
	}
	s.seq = seq
	s.mu.Unlock()
	s.pending.Store(pending)
	if r != nil && s.cfg.OnRevocation != nil {
		s.cfg.OnRevocation(*r)
	}
	if k != nil && s.cfg.OnKey != nil {
		s.cfg.OnKey(*k)
	}
}

// prune forgets the families whose access tokens have all expired and the
// cut-offs older than the access-token lifetime.
func (s *Subscriber) prune() {
	now := s.cfg.Now().Add(-leeway)
	s.mu.Lock()
	defer s.mu.Unlock()
	for fid, exp := range s.families {
		if exp.Before(now) {
			delete(s.families, fid)
		}
	}
	for sub, at := range s.cutoffs {
		if at.Add(s.cfg.AccessTTL).Before(now) {
			delete(s.cutoffs, sub)
		}
	}
}

// IsRevoked reports whether the token with claims c is revoked, as far as
// the messages received so far tell.
func (s *Subscriber) IsRevoked(c Claims) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, revoked := s.families[c.FamilyID]
	return family.Revokes(family.AccessClaims{Subject: c.Subject, FamilyID: c.FamilyID, IssuedAt: c.IssuedAt}, revoked, s.cutoffs[c.Subject])
}

// Ready is closed once every message that existed when Run started has
// been applied.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// Lag returns how many messages were still to be applied when the last
// one arrived: 0 when caught up.
func (s *Subscriber) Lag() uint64 { return s.pending.Load() }

// Seq returns the feed sequence of the last message applied.
func (s *Subscriber) Seq() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq
}

// Start is where Watch starts: after a stream sequence, or at a time; the
// zero Start delivers the messages written from now on (and from up to two
// seconds before, to cover the clock difference with the server).
type Start struct {
	AfterSeq uint64
	Since    time.Time
}

// Watch calls fn with every revocation of the feed from start on, in
// stream order, until ctx ends (it returns ctx's error) or fn returns an
// error (which Watch returns); fn and cfg.OnKey and cfg.OnCaughtUp run on
// one goroutine at a time. It sets its consumer up again after a failure,
// resuming after the last message delivered, but returns the error of the
// first set-up (no such stream, no permission).
func Watch(ctx context.Context, js jetstream.JetStream, cfg Config, start Start, fn func(Revocation) error) error {
	cfg.setDefaults()
	if start.AfterSeq == 0 && start.Since.IsZero() {
		// "From now" is fixed once: a consumer set up again later
		// resumes by sequence, or from this time, and skips nothing.
		start.Since = time.Now().Add(-nowLeeway)
	}
	var fnErr error
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	caughtUp := func() {
		if cfg.OnCaughtUp != nil {
			once.Do(cfg.OnCaughtUp)
		}
	}
	for first := true; ; first = false {
		err := watch(wctx, js, cfg, start, func(seq, _ uint64, r *Revocation, k *Key) {
			start = Start{AfterSeq: seq}
			if fnErr != nil {
				return
			}
			if k != nil && cfg.OnKey != nil {
				cfg.OnKey(*k)
			}
			if r != nil {
				if fnErr = fn(*r); fnErr != nil {
					cancel()
				}
			}
		}, caughtUp, nil, nil)
		switch {
		case fnErr != nil:
			return fnErr
		case ctx.Err() != nil:
			return ctx.Err()
		case first && errors.Is(err, errSetUp):
			return err
		case err != nil:
			cfg.report(fmt.Errorf("%w; setting the consumer up again", err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retryEvery):
		}
	}
}

// errSetUp marks a failure to set the consumer up.
var errSetUp = errors.New("subscriber: set up")

// errGap is a message delivered out of the consumer's order: the consumer
// is set up again after the last message applied.
var errGap = errors.New("subscriber: gap in the consumer's deliveries")

// watch reads the feed with one consumer until ctx ends or the consumer
// fails. Its apply calls are serialised and never happen after it
// returns.
func watch(ctx context.Context, js jetstream.JetStream, cfg Config, start Start, apply func(seq, pending uint64, r *Revocation, k *Key), caughtUp func(), tick <-chan time.Time, onTick func()) error {
	name := cfg.Consumer
	if name == "" {
		name = randomName()
	}
	cc := jetstream.ConsumerConfig{
		Name:          name,
		Description:   "token feed reader",
		FilterSubject: NewSubjects(cfg.Prefix).All(),
		AckPolicy:     jetstream.AckNonePolicy,
		MemoryStorage: true,
		Replicas:      1,
		// The server removes the consumer this long after the last pull:
		// a reader that went away leaves nothing behind for long.
		InactiveThreshold: 10 * time.Second,
	}
	since := start.Since
	if start.AfterSeq == 0 && since.IsZero() {
		since = time.Now().Add(-nowLeeway)
	}
	if start.AfterSeq > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start.AfterSeq+1
	} else {
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	// A consumer of this name left by an earlier reader starts elsewhere,
	// and its start cannot be updated: replace it.
	if err := js.DeleteConsumer(ctx, cfg.Stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("%w: delete consumer %s: %w", errSetUp, name, err)
	}
	cons, err := js.CreateConsumer(ctx, cfg.Stream, cc)
	if err != nil {
		return fmt.Errorf("%w: consumer %s on %s: %w", errSetUp, name, cfg.Stream, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(dctx, cfg.Stream, name) // best effort: InactiveThreshold removes it otherwise
	}()
	info := cons.CachedInfo()
	if info.NumPending == 0 && caughtUp != nil {
		caughtUp()
	}
	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	var mu sync.Mutex
	stopped := false
	defer func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
	}()
	next := uint64(1) // the consumer sequence of the next delivery
	consume, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if md.Sequence.Consumer != next {
			// Acknowledgement none: a message lost on the way (a slow
			// client) is not redelivered. Set up again after the last one.
			stopped = true
			fail(errGap)
			return
		}
		next++
		r, k, err := Decode(md.Sequence.Stream, md.Timestamp, m.Headers(), m.Data())
		if err == nil {
			apply(md.Sequence.Stream, md.NumPending, r, k)
		} else {
			cfg.report(fmt.Errorf("subscriber: skipped feed message %d: %w", md.Sequence.Stream, err))
		}
		if md.NumPending == 0 && caughtUp != nil {
			caughtUp()
		}
	}, jetstream.PullMaxMessages(512), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			fail(err) // returned by watch, reported by its caller
		} else if ctx.Err() == nil {
			cfg.report(fmt.Errorf("subscriber: consumer %s: %w", name, err)) // the consumer goes on
		}
	}))
	if err != nil {
		return fmt.Errorf("%w: consume: %w", errSetUp, err)
	}
	defer consume.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-failed:
			return err
		case <-tick:
			onTick()
		}
	}
}

// ConsumerName returns the consumer name of the subscriber user whose nkey
// seed is in seedFile (its public key, U...): Config.Consumer on the token
// service's embedded server.
func ConsumerName(seedFile string) (string, error) {
	b, err := os.ReadFile(seedFile)
	if err != nil {
		return "", fmt.Errorf("subscriber: seed: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return "", fmt.Errorf("subscriber: seed %s: %w", seedFile, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("subscriber: seed %s: not a user nkey seed", seedFile)
	}
	return pub, nil
}

func randomName() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "feed_" + hex.EncodeToString(b[:])
}
