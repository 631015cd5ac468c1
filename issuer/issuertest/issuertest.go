// Package issuertest assembles a real issuer for tests: an event log on an
// embedded JetStream node (or a connection given by the test), live
// projections, a keyring with a local key, and a controllable clock.
package issuertest

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/breaker"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// Clock is a manual clock, safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the current time of the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Options configures an Env. Zero values pick the defaults in comments.
type Options struct {
	Conn       *nats.Conn        // default: a new single embedded node
	Replicas   int               // default 1
	Algorithm  signing.Algorithm // default ES256
	AccessTTL  time.Duration     // default 15m
	RefreshTTL time.Duration     // default 1h
	Grace      time.Duration     // default 0 (off)
	// EventRetention is the issuer's Retention (EVENT_RETENTION); default
	// 0, events kept forever.
	EventRetention time.Duration
	Clock          *Clock       // default: a new clock at the time of New, to the second
	Key            []byte       // sealing key; default fixed test key
	Sealer         *seal.Sealer // default: a local sealer of Key
	Observer       issuer.Observer
	// Prepublish, Retention and RotationPeriod configure the keyring
	// (keyring defaults).
	Prepublish, Retention, RotationPeriod time.Duration
	// Backend and Fallback configure the keyring's key source (default
	// the local backend, no fallback key).
	Backend  keyring.Backend
	Fallback bool
	Breaker  breaker.Config
	// KeyringOnError is the keyring's OnError (default: fail the test).
	KeyringOnError func(error)
	// LogObserver and Tracer instrument the event log and the issuer
	// (default none).
	LogObserver eventlog.Observer
	Tracer      trace.Tracer
	// VerifiedTokens is the issuer's Config.VerifiedTokens (default: the
	// issuer's default).
	VerifiedTokens int
}

// Env is an assembled issuer and its parts.
type Env struct {
	Log     *eventlog.Log
	Set     *projections.Set
	Runner  *projections.Runner
	Keyring *keyring.Keyring
	Issuer  *issuer.Issuer
	// Responder carries out key compromises with Keyring and Issuer;
	// New resumed the pending ones, as tokend does at start-up.
	Responder *keyring.Responder
	Clock     *Clock
	Sealer    *seal.Sealer
}

// TestKey is the sealing key tests use unless they give one.
var TestKey = []byte("0123456789abcdef0123456789abcdef")

// New builds an Env and stops it with t.Cleanup.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	if o.Conn == nil {
		o.Conn = eventlogtest.SingleNode(t).Conn
	}
	if o.Algorithm == "" {
		o.Algorithm = signing.ES256
	}
	if o.AccessTTL == 0 {
		o.AccessTTL = 15 * time.Minute
	}
	if o.RefreshTTL == 0 {
		o.RefreshTTL = time.Hour
	}
	if o.Clock == nil {
		// Near the wall clock, not at a fixed date: the projections
		// forget what ended by the log's own timestamps (Set's sweep), so
		// families issued at a date long past would all be forgotten at
		// the first sweep, which runs when a wall-clock minute turns.
		o.Clock = NewClock(time.Now().UTC().Truncate(time.Second))
	}
	if o.Key == nil {
		o.Key = TestKey
	}
	if o.KeyringOnError == nil {
		o.KeyringOnError = func(err error) { t.Errorf("keyring: %v", err) }
	}
	log := eventlogtest.OpenLog(t, o.Conn, eventlog.Config{Replicas: o.Replicas, Observer: o.LogObserver, Tracer: o.Tracer})
	set := projections.NewSet(o.AccessTTL)
	runner := projections.NewRunner(log, set, func(rec eventlog.Record, err error) {
		t.Errorf("bad record %d: %v", rec.Seq, err)
	}, func(err error) { t.Logf("projection runner: %v (retrying)", err) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-runner.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("projections not ready after 30s")
	}
	sealer := o.Sealer
	if sealer == nil {
		var err error
		if sealer, err = seal.New(rand.Reader, o.Key); err != nil {
			t.Fatal(err)
		}
	}
	kr, err := keyring.New(log, set, runner, sealer, keyring.Config{Rand: rand.Reader, Now: o.Clock.Now, Algorithm: o.Algorithm,
		Prepublish: o.Prepublish, Retention: o.Retention, RotationPeriod: o.RotationPeriod, Backend: o.Backend, Fallback: o.Fallback, Breaker: o.Breaker,
		OnError: o.KeyringOnError})
	if err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithCancel(context.Background())
	kdone := make(chan struct{})
	go func() { defer close(kdone); _ = kr.Run(kctx) }() // ends with kctx; it reports through OnError
	t.Cleanup(func() { kcancel(); <-kdone })
	sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer scancel()
	if _, err := kr.EnsureActive(sctx); err != nil {
		t.Fatal(err)
	}
	is, err := issuer.New(log, kr, projections.Index{Set: set, Runner: runner}, sealer, issuer.Config{
		Issuer: "https://issuer.test", AccessTTL: o.AccessTTL, RefreshTTL: o.RefreshTTL, Grace: o.Grace,
		Retention: o.EventRetention, Now: o.Clock.Now, Rand: rand.Reader, Observer: o.Observer, Tracer: o.Tracer,
		VerifiedTokens: o.VerifiedTokens,
	})
	if err != nil {
		t.Fatal(err)
	}
	responder := keyring.NewResponder(kr, is)
	if err := responder.Resume(sctx); err != nil {
		t.Fatal(err)
	}
	return &Env{Log: log, Set: set, Runner: runner, Keyring: kr, Issuer: is, Responder: responder, Clock: o.Clock, Sealer: sealer}
}

// TB is the part of testing.TB (and rapid.T) the helpers need.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// LastSeq returns the last sequence of the stream, failing t on error.
func (e *Env) LastSeq(t TB) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seq, err := e.Log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// CaughtUp waits until the projections applied the whole stream.
func (e *Env) CaughtUp(t TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Wait for the last event of each aggregate, not for the stream's last
	// record: that may be a grace record or a DPoP claim, which can expire
	// before the runner reads it, and then the position never reaches it.
	s := e.Log.Subjects()
	for _, f := range []string{s.Families(), s.SubjectRevocations(), s.Keys()} {
		rec, err := e.Log.LastConsistent(ctx, f)
		if errors.Is(err, eventlog.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Runner.WaitFor(ctx, rec.Seq); err != nil {
			t.Fatal(err)
		}
	}
}
