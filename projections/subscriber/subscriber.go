// Package subscriber keeps, inside a resource server, the set of
// revocations that can still affect live access tokens, fed from the token
// service's event stream over NATS, so that the resource server checks a
// token's revocation in memory with no call to the token service.
//
// It reads only revocation events (one filter, <prefix>.*.*.revoked). On the
// token service's embedded NATS server, connect as its subscriber user (the
// nkey seed tokend writes to DATA_DIR/nats-subscriber.nk, or one whose public
// key is in NATS_SUBSCRIBER_KEY) and set Config.Stream to TOKENS_FEED
// (eventlog.DefaultFeedStream): that user reads only the feed, which holds
// the revocations and key events of the log, so the same filter selects the
// same revocations there. It starts
// AccessTTL (plus a minute of clock leeway) in the past: a revocation older
// than that concerns only access tokens that have expired.
//
// A revoked family revokes every access token whose sid claim names it. A
// subject cut-off revokes every access token of the subject issued at or
// before the cut-off; iat has one-second precision, so a token issued in
// the same second as the cut-off but after it is refused too (the safe
// side).
//
// Until Ready is closed the set is still catching up: a resource server
// should refuse tokens (or wait) until then, and watch Lag.
package subscriber

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// Config configures a Subscriber. Its zero value subscribes to the token
// service's defaults.
type Config struct {
	// Stream is the stream to read: the token service's log, or
	// TOKENS_FEED for the subscriber user of its embedded server. Default
	// "TOKENS".
	Stream string
	// Prefix is its subject prefix. Default "token".
	Prefix string
	// AccessTTL is the longest access-token lifetime the service issues
	// (its ACCESS_TOKEN_TTL). Default 15 minutes.
	AccessTTL time.Duration
	// OnRevocation, if set, is called with each revocation once IsRevoked
	// reflects it, in stream order, on one goroutine.
	OnRevocation func(Revocation)
	// OnCaughtUp, if set, is called once every revocation that existed
	// when reading started has been delivered (at once if there were
	// none): from then on, new revocations arrive as they are appended.
	OnCaughtUp func()
	// Now is the clock that prunes expired entries. Default time.Now.
	Now func() time.Time
}

// Revocation is a revocation event: a family's, or a subject cut-off.
type Revocation struct {
	// Seq is the event's stream sequence.
	Seq uint64
	// FamilyID is the revoked family (the sid claim of its access tokens);
	// empty for a subject cut-off.
	FamilyID string
	// Subject is the family's subject, or the subject cut off.
	Subject string
	// Reason is reuse, client, subject, key_compromise or admin.
	Reason    string
	RevokedAt time.Time
	// AccessExpiresAt is, for a family, when its last access token
	// expires.
	AccessExpiresAt time.Time
	// AppendedAt is when the event was stored in the stream.
	AppendedAt time.Time
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

	mu  sync.RWMutex
	rev *projections.Revocations
	seq uint64

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
	return &Subscriber{js: js, cfg: cfg, rev: projections.NewRevocations(cfg.AccessTTL), ready: make(chan struct{})}, nil
}

func (c *Config) setDefaults() {
	if c.Stream == "" {
		c.Stream = "TOKENS"
	}
	if c.Prefix == "" {
		c.Prefix = "token"
	}
	if c.AccessTTL <= 0 {
		c.AccessTTL = 15 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// leeway covers the clock difference between the service and this process.
const leeway = time.Minute

// nowLeeway is how far before now a watch "from now" starts.
const nowLeeway = 2 * time.Second

// Run follows the revocations until ctx ends, resuming after the last one
// applied when the consumer has to be set up again.
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
		if ctx.Err() != nil {
			return nil
		}
		_ = err // the connection or the stream leader is away: set up again
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (s *Subscriber) apply(rec eventlog.Record, m revocationEvent, r Revocation) {
	s.mu.Lock()
	s.rev.Apply(rec, m)
	s.seq = rec.Seq
	s.mu.Unlock()
	s.pending.Store(rec.Pending)
	if s.cfg.OnRevocation != nil {
		s.cfg.OnRevocation(r)
	}
}

func (s *Subscriber) prune() {
	s.mu.Lock()
	s.rev.Prune(s.cfg.Now().Add(-leeway))
	s.mu.Unlock()
}

// IsRevoked reports whether the token with claims c is revoked, as far as
// the events received so far tell.
func (s *Subscriber) IsRevoked(c Claims) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if _, ok := s.rev.Family(c.FamilyID); ok && c.FamilyID != "" {
		return true
	}
	cut, ok := s.rev.Subject(c.Subject)
	return ok && !c.IssuedAt.After(cut.At)
}

// Ready is closed once every revocation that existed when Run started has
// been applied.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// Lag returns how many revocation events were still to be applied when the
// last one arrived: 0 when caught up.
func (s *Subscriber) Lag() uint64 { return s.pending.Load() }

// Seq returns the stream sequence of the last revocation applied.
func (s *Subscriber) Seq() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq
}

// Start is where Watch starts: after a stream sequence, or at a time; the
// zero Start delivers the revocations appended from now on (and from up to
// two seconds before, to cover the clock difference with the server).
type Start struct {
	AfterSeq uint64
	Since    time.Time
}

// Watch calls fn with every revocation from start on, in stream order,
// until ctx ends or fn returns an error (which Watch returns); fn and
// cfg.OnCaughtUp run on one goroutine at a time. It reads the
// stream over js with an ordered consumer on the revocation filter only.
func Watch(ctx context.Context, js jetstream.JetStream, cfg Config, start Start, fn func(Revocation) error) error {
	cfg.setDefaults()
	var fnErr error
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	caughtUp := func() {
		if cfg.OnCaughtUp != nil {
			once.Do(cfg.OnCaughtUp)
		}
	}
	err := watch(wctx, js, cfg, start, func(_ eventlog.Record, _ revocationEvent, r Revocation) {
		if fnErr != nil {
			return
		}
		if fnErr = fn(r); fnErr != nil {
			cancel()
		}
	}, caughtUp, nil, nil)
	if fnErr != nil {
		return fnErr
	}
	return err
}

// revocationEvent is a decoded FamilyRevoked or SubjectRevoked.
type revocationEvent = proto.Message

// watch runs one ordered consumer until ctx ends or it fails. Its apply
// calls are serialised and never happen after watch returns.
func watch(ctx context.Context, js jetstream.JetStream, cfg Config, start Start, apply func(eventlog.Record, revocationEvent, Revocation), caughtUp func(), tick <-chan time.Time, onTick func()) error {
	oc := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{eventlog.NewSubjects(cfg.Prefix).Revocations()},
		// The server removes the consumer this long after the last pull:
		// a watcher that went away leaves nothing behind for long.
		InactiveThreshold: 10 * time.Second,
	}
	since := start.Since
	if start.AfterSeq == 0 && since.IsZero() {
		// "From now" is a time, not NATS's deliver-new policy: an ordered
		// consumer that must be set up again before its first message
		// (the connection dropped) would then start from the new "now"
		// and skip what was appended in between. A little before now
		// covers the clock difference with the server; a client may see
		// a revocation of the last seconds twice (its sequence tells).
		since = time.Now().Add(-nowLeeway)
	}
	switch {
	case start.AfterSeq > 0:
		oc.DeliverPolicy, oc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start.AfterSeq+1
	default:
		oc.DeliverPolicy, oc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := js.OrderedConsumer(ctx, cfg.Stream, oc)
	if err != nil {
		return fmt.Errorf("subscriber: ordered consumer: %w", err)
	}
	info := cons.CachedInfo()
	if info == nil {
		if info, err = cons.Info(ctx); err != nil {
			return fmt.Errorf("subscriber: consumer info: %w", err)
		}
	}
	if info.NumPending == 0 && caughtUp != nil {
		caughtUp()
	}
	var mu sync.Mutex
	stopped := false
	defer func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
	}()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		rec, err := eventlog.RecordOf(m)
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if ev, r, ok := decode(rec); ok {
			apply(rec, ev, r)
		}
		if rec.Pending == 0 && caughtUp != nil {
			caughtUp()
		}
	}, jetstream.PullMaxMessages(512), jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {}))
	if err != nil {
		return fmt.Errorf("subscriber: consume: %w", err)
	}
	defer cc.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			onTick()
		}
	}
}

// decode returns the revocation a record holds; ok is false for a record
// that is not one (it is skipped).
func decode(rec eventlog.Record) (revocationEvent, Revocation, bool) {
	m, err := projections.Decode(rec)
	if err != nil {
		return nil, Revocation{}, false
	}
	r := Revocation{Seq: rec.Seq, AppendedAt: rec.Time}
	switch e := m.(type) {
	case *eventsv1.FamilyRevoked:
		st := e.GetState()
		r.FamilyID, r.Subject = st.GetFamilyId(), st.GetSubject()
		r.Reason = projections.ReasonName(e.GetReason())
		r.RevokedAt, r.AccessExpiresAt = st.GetRevokedAt().AsTime(), st.GetAccessExpiresAt().AsTime()
	case *eventsv1.SubjectRevoked:
		r.Subject, r.Reason, r.RevokedAt = e.GetSubject(), projections.ReasonName(e.GetReason()), e.GetRevokedAt().AsTime()
	default:
		return nil, Revocation{}, false
	}
	return m, r, true
}

// Feed serves watches for a process that may read the stream's state (the
// token service itself): a watch from now starts after the stream's last
// sequence, exactly, rather than a little before now. A watch then starts
// by sequence, which also survives its consumer being set up again.
type Feed struct {
	JS     jetstream.JetStream
	Config Config
}

// WatchRevocations calls fn with every revocation after stream sequence
// after (0: from now on) until ctx ends or fn fails; subscribed is called
// once the revocations that existed at the start were delivered.
func (f Feed) WatchRevocations(ctx context.Context, after uint64, subscribed func(), fn func(Revocation) error) error {
	cfg := f.Config
	cfg.setDefaults()
	if after == 0 {
		s, err := f.JS.Stream(ctx, cfg.Stream)
		if err != nil {
			return fmt.Errorf("subscriber: stream %s: %w", cfg.Stream, err)
		}
		after = s.CachedInfo().State.LastSeq
	}
	cfg.OnCaughtUp = subscribed
	return Watch(ctx, f.JS, cfg, Start{AfterSeq: after}, fn)
}
