package issuer_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
)

// TestRetentionBoundsTheLog: with EVENT_RETENTION of seconds, a steady
// load of issues, rotations and revocations makes the stream level off
// instead of growing with everything appended; no family event older than
// the family's life plus the retention is left; a family whose events left
// is an unknown token (refresh refused, revocation a no-op); and the key
// events, which have no TTL, are all still there and rebuild the JWKS on
// a fresh replay long after the window.
func TestRetentionBoundsTheLog(t *testing.T) {
	const (
		accessTTL  = time.Second
		refreshTTL = 2 * time.Second
		retention  = 2 * time.Second
		tick       = 50 * time.Millisecond
		ticks      = 240 // 12 s of load
		// life is the longest any family event may stay: the family's
		// refresh TTL after its last rotation, the retention, the
		// server's whole-second rounding and expiry sweep.
		life = refreshTTL + retention + 3*time.Second
	)
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Now())
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn, Clock: clock, AccessTTL: accessTTL, RefreshTTL: refreshTTL, EventRetention: retention})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := env.Log.JetStream().Stream(ctx, env.Log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	keyEvents := func() int {
		n := 0
		if err := env.Log.Replay(ctx, 1, []string{env.Log.Subjects().Keys()}, func(eventlog.Record) { n++ }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	keysBefore := keyEvents()

	// A steady load: each tick issues a family, rotates the one issued
	// five ticks before, and every tenth tick revokes one.
	var toks []issuer.Tokens
	type sample struct {
		at          time.Duration
		msgs, bytes uint64
	}
	var samples []sample
	start := time.Now()
	for i := range ticks {
		clock.Advance(time.Since(clock.Now())) // the issuer's clock follows the server's
		tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "load", ClientID: "web", Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
		if i >= 5 {
			rot, err := env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: toks[i-5].RefreshToken, ClientID: "web"})
			if err != nil {
				t.Fatalf("tick %d: refresh: %v", i, err)
			}
			toks[i-5] = rot
			if i%10 == 0 {
				if _, err := env.Issuer.RevokeFamily(ctx, rot.FamilyID, 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		if i%20 == 19 {
			info, err := stream.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			samples = append(samples, sample{time.Since(start), info.State.Msgs, info.State.Bytes})
		}
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * tick)))
	}
	appended := env.LastSeq(t)
	for _, s := range samples {
		t.Logf("after %5.1fs: %4d messages, %7d bytes in the stream", s.at.Seconds(), s.msgs, s.bytes)
	}
	// The level off: the last third of the run holds no more than the
	// middle third (a log that keeps everything grows by half from one to
	// the other), and far less than everything appended.
	third := len(samples) / 3
	peak := func(ss []sample) (m uint64) {
		for _, s := range ss {
			m = max(m, s.msgs)
		}
		return m
	}
	mid, last := peak(samples[third:2*third]), peak(samples[2*third:])
	t.Logf("steady state: %d messages (%d bytes) for %d appended; %.0f appends/s", last, samples[len(samples)-1].bytes, appended, float64(appended)/time.Since(start).Seconds())
	if float64(last) > 1.2*float64(mid) {
		t.Errorf("the stream still grows: peak %d messages in the middle third, %d in the last", mid, last)
	}
	if last*2 > appended {
		t.Errorf("the stream holds %d of %d messages appended", last, appended)
	}
	// No family event outlives its family's life plus the retention.
	old, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(env.Log.Subjects().Families()))
	if err != nil {
		t.Fatal(err)
	}
	if age := time.Since(old.Time); age > life {
		t.Errorf("the oldest family event (seq %d, %s) is %s old, over %s", old.Sequence, old.Subject, age.Round(time.Millisecond), life)
	}

	// The first family's events have left: it is an unknown token now, the
	// same answer as for a token never issued, and revoking it is a no-op.
	_, err = env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: toks[0].RefreshToken, ClientID: "web"})
	if !errors.Is(err, issuer.ErrUnknownToken) {
		t.Errorf("refresh of a family whose events left: %v, want ErrUnknownToken", err)
	}
	if n, err := env.Issuer.RevokeFamily(ctx, toks[0].FamilyID, 0); n != 0 || err != nil {
		t.Errorf("revoke of a family whose events left: %d, %v", n, err)
	}

	// Keys never expire: every key event is still there, past the window,
	// and a replica that replays the log from the start serves the JWKS.
	if got := keyEvents(); got != keysBefore || got == 0 {
		t.Errorf("key events: %d after the load, %d before", got, keysBefore)
	}
	var refused atomic.Int64
	replayLog := eventlogtest.OpenLog(t, node.Conn, eventlog.Config{OnForged: func(eventlog.Record, error) { refused.Add(1) }})
	fresh := projections.NewSet(accessTTL)
	runner := projections.NewRunner(replayLog, fresh, func(rec eventlog.Record, err error) { t.Errorf("bad record %d: %v", rec.Seq, err) }, func(error) {})
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(rctx) }()
	defer func() { rcancel(); <-done }()
	select {
	case <-runner.Ready():
	case <-ctx.Done():
		t.Fatal("replay not ready")
	}
	want, _ := env.Set.ActiveKey()
	got, ok := fresh.ActiveKey()
	if !ok || got.ID != want.ID || len(fresh.JWKS()) != len(env.Set.JWKS()) || len(fresh.JWKS()) == 0 {
		t.Errorf("after replay: active key %q (%v), %d keys in the JWKS; live: %q, %d", got.ID, ok, len(fresh.JWKS()), want.ID, len(env.Set.JWKS()))
	}
	// Families whose first events left before their last ones are refused
	// by a replay that checks the chain from sequence 1 (issue 13, item 1
	// owns that reader); counted here, not asserted.
	t.Logf("replay: %d family records refused as not following a held predecessor", refused.Load())
}

// TestRetentionNeverShortensAFamily: after REFRESH_TOKEN_TTL is lowered,
// a rotation and a revocation still leave the log no earlier than the
// events before them, so the family's last state is never an earlier one
// (whose spent refresh token would be current again).
func TestRetentionNeverShortensAFamily(t *testing.T) {
	clock := issuertest.NewClock(time.Now())
	env := issuertest.New(t, issuertest.Options{Clock: clock, RefreshTTL: time.Hour, EventRetention: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "dave", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	// The same log, served after a restart with a much shorter refresh TTL.
	lowered, err := issuer.New(env.Log, env.Keyring, projections.Index{Set: env.Set, Runner: env.Runner}, env.Sealer, issuer.Config{
		Issuer: "https://issuer.test", AccessTTL: time.Second, RefreshTTL: 2 * time.Second, Retention: time.Second, Now: clock.Now, Rand: rand.Reader,
	})
	if err != nil {
		t.Fatal(err)
	}
	filter := env.Log.Subjects().FamilyFilter(tok.FamilyID)
	last := func() eventlog.Record {
		rec, err := env.Log.LastConsistent(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		if rec.TTL <= 0 {
			t.Fatalf("%s without a TTL", rec.Type)
		}
		return rec
	}
	issued := last()
	clock.Advance(time.Since(clock.Now()))
	rot, err := lowered.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "web"})
	if err != nil {
		t.Fatal(err)
	}
	rotated := last()
	if rotated.Time.Add(rotated.TTL).Before(issued.Time.Add(issued.TTL)) {
		t.Errorf("the rotation leaves at %s, before the issued event it follows (%s)", rotated.Time.Add(rotated.TTL), issued.Time.Add(issued.TTL))
	}
	if n, err := lowered.RevokeFamily(ctx, rot.FamilyID, 0); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	if revoked := last(); revoked.Time.Add(revoked.TTL).Before(rotated.Time.Add(rotated.TTL)) {
		t.Errorf("the revocation leaves at %s, before the rotation it ends (%s)", revoked.Time.Add(revoked.TTL), rotated.Time.Add(rotated.TTL))
	}
}

// TestFamilyOutlivesItsFirstEvents: once a family's issued event has left
// the log, its later events still pass the chain check of Log.Last (the
// first message after the last one's stated predecessor is still that
// message), so the family refreshes and detects reuse as before.
func TestFamilyOutlivesItsFirstEvents(t *testing.T) {
	clock := issuertest.NewClock(time.Now())
	follow := func() { clock.Advance(time.Since(clock.Now())) } // the issuer's clock follows the server's
	// The family is issued with a 1 s refresh TTL, so its issued event
	// leaves after about 2 s, and rotated by an issuer with a long one.
	env := issuertest.New(t, issuertest.Options{Clock: clock, AccessTTL: time.Second, RefreshTTL: time.Second, EventRetention: time.Second})
	long, err := issuer.New(env.Log, env.Keyring, projections.Index{Set: env.Set, Runner: env.Runner}, env.Sealer, issuer.Config{
		Issuer: "https://issuer.test", AccessTTL: time.Second, RefreshTTL: time.Minute, Retention: time.Second, Now: clock.Now, Rand: rand.Reader,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	follow()
	tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "erin", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := long.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "web"})
	if err != nil {
		t.Fatal(err)
	}
	issued := env.Log.Subjects().Family(tok.FamilyID, "issued")
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := env.Log.LastConsistent(ctx, issued)
		if errors.Is(err, eventlog.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the issued event is still in the log (%v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	follow()
	rot2, err := long.Refresh(ctx, issuer.RefreshRequest{RefreshToken: rot.RefreshToken, ClientID: "web"})
	if err != nil {
		t.Fatalf("refresh after the family's first event left: %v", err)
	}
	if _, err := long.Refresh(ctx, issuer.RefreshRequest{RefreshToken: rot.RefreshToken, ClientID: "web"}); !errors.Is(err, issuer.ErrTokenReused) {
		t.Fatalf("replay of the spent token: %v, want ErrTokenReused", err)
	}
	if _, err := long.Refresh(ctx, issuer.RefreshRequest{RefreshToken: rot2.RefreshToken, ClientID: "web"}); !errors.Is(err, issuer.ErrFamilyRevoked) {
		t.Fatalf("refresh of a family revoked for reuse: %v, want ErrFamilyRevoked", err)
	}
}
