package subscriber_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

func generate(t *testing.T, env *issuertest.Env, subject string) issuer.Tokens {
	t.Helper()
	tok, err := env.Issuer.Generate(context.Background(), issuer.GenerateRequest{Subject: subject, ClientID: "app", Audience: []string{"https://api.test"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// startFeed makes the feed stream on node and runs a feed writer of env's
// log until the test ends, as tokend does.
func startFeed(t *testing.T, env *issuertest.Env) {
	t.Helper()
	ctx := context.Background()
	js := env.Log.JetStream()
	if _, err := js.CreateOrUpdateStream(ctx, eventlog.FeedStreamConfig(subscriber.DefaultStream, "token", 1)); err != nil {
		t.Fatal(err)
	}
	w := projections.NewFeedWriter(env.Log, js, projections.FeedConfig{})
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(wctx) }()
	t.Cleanup(func() { stop(); <-done })
}

// feedHolds waits until the feed holds the log's events up to seq: it
// trails the log by one publish.
func feedHolds(t *testing.T, env *issuertest.Env, seq uint64) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, fmt.Sprintf("the feed up to log seq %d", seq), func() bool {
		st, err := env.Log.JetStream().Stream(ctx, subscriber.DefaultStream)
		if err != nil || st.CachedInfo().State.LastSeq == 0 {
			return false
		}
		m, err := st.GetMsg(ctx, st.CachedInfo().State.LastSeq)
		if err != nil {
			return false
		}
		src, _ := strconv.ParseUint(m.Header.Get(subscriber.HeaderSourceSeq), 10, 64)
		return src >= seq
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSubscriber: a resource server's subscriber, on its own connection,
// learns from the feed the revocations made before it started and after,
// and answers IsRevoked for families and subject cut-offs; it sees the
// signing keys' steps in order.
func TestSubscriber(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	startFeed(t, env)
	ctx := context.Background()
	early := generate(t, env, "alice")
	if _, err := env.Issuer.RevokeFamily(ctx, early.FamilyID, eventsv1.RevocationReason_REVOCATION_REASON_CLIENT); err != nil {
		t.Fatal(err)
	}
	feedHolds(t, env, env.LastSeq(t))

	nc, err := node.Embedded.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	got := make(chan subscriber.Revocation, 16)
	keys := make(chan subscriber.Key, 16)
	sub, err := subscriber.New(nc, subscriber.Config{Consumer: "rs1", Now: env.Clock.Now,
		OnRevocation: func(r subscriber.Revocation) { got <- r }, OnKey: func(k subscriber.Key) { keys <- k }})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = sub.Run(rctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-sub.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber not ready")
	}
	if !sub.IsRevoked(subscriber.Claims{Subject: "alice", FamilyID: early.FamilyID}) {
		t.Fatal("a revocation made before the subscriber started is unknown")
	}
	if r := <-got; r.FamilyID != early.FamilyID || r.Subject != "alice" || r.Reason != "client" || r.Seq == 0 || r.SourceSeq == 0 {
		t.Fatalf("revocation %+v", r)
	}
	// The first key, published then activated, with its public key.
	for _, want := range []string{"published", "activated"} {
		k := <-keys
		if k.Status != want || k.PublicKey == nil || k.PublicKey.GetKid() != k.ID || k.Algorithm != "ES256" {
			t.Fatalf("key step %+v, want %s", k, want)
		}
	}

	live := generate(t, env, "bob")
	claims := subscriber.Claims{Subject: "bob", FamilyID: live.FamilyID, IssuedAt: env.Clock.Now().Truncate(time.Second)}
	if sub.IsRevoked(claims) {
		t.Fatal("a live family is revoked")
	}
	if _, err := env.Issuer.RevokeAccessToken(ctx, live.AccessToken, eventsv1.RevocationReason_REVOCATION_REASON_ADMIN); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "family revocation", func() bool { return sub.IsRevoked(claims) })

	// A subject cut-off revokes the subject's tokens issued at or before
	// it, whatever their family, and not those issued after it.
	other := generate(t, env, "carol")
	before := subscriber.Claims{Subject: "carol", FamilyID: other.FamilyID, IssuedAt: env.Clock.Now().Truncate(time.Second)}
	if _, err := env.Issuer.RevokeSubject(ctx, "carol", eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "subject cut-off", func() bool {
		return sub.IsRevoked(subscriber.Claims{Subject: "carol", FamilyID: "unknown-family", IssuedAt: before.IssuedAt})
	})
	if !sub.IsRevoked(before) {
		t.Fatal("a token issued before the cut-off is live")
	}
	if sub.IsRevoked(subscriber.Claims{Subject: "carol", FamilyID: "new-family", IssuedAt: env.Clock.Now().Add(2 * time.Second)}) {
		t.Fatal("a token issued after the cut-off is revoked")
	}
	if sub.Lag() != 0 {
		t.Fatalf("lag %d after catching up", sub.Lag())
	}
}

// TestWatchResumes: Watch from a feed sequence delivers exactly the
// revocations after it, in order, and skips the key events.
func TestWatchResumes(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	startFeed(t, env)
	ctx := context.Background()
	var fids []string
	for range 4 {
		tok := generate(t, env, "dave")
		if _, err := env.Issuer.RevokeFamily(ctx, tok.FamilyID, eventsv1.RevocationReason_REVOCATION_REASON_CLIENT); err != nil {
			t.Fatal(err)
		}
		fids = append(fids, tok.FamilyID)
	}
	var seqs []uint64
	collect := func(start subscriber.Start, n int) []subscriber.Revocation {
		var out []subscriber.Revocation
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := subscriber.Watch(wctx, env.Log.JetStream(), subscriber.Config{}, start, func(r subscriber.Revocation) error {
			out = append(out, r)
			if len(out) == n {
				cancel()
			}
			return nil
		})
		if len(out) != n {
			t.Fatalf("got %d revocations, want %d (%v)", len(out), n, err)
		}
		return out
	}
	for i, r := range collect(subscriber.Start{Since: time.Now().Add(-time.Hour)}, 4) {
		if r.FamilyID != fids[i] {
			t.Fatalf("revocation %d: family %s, want %s", i, r.FamilyID, fids[i])
		}
		seqs = append(seqs, r.Seq)
	}
	rest := collect(subscriber.Start{AfterSeq: seqs[1]}, 2)
	if rest[0].FamilyID != fids[2] || rest[1].FamilyID != fids[3] {
		t.Fatalf("resumed after seq %d: got %s, %s", seqs[1], rest[0].FamilyID, rest[1].FamilyID)
	}
}
