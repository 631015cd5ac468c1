package app_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
)

// TestLogTrust runs the two experiments of the log-trust review on the
// embedded default (make run): a captured family.issued event published
// again after the family rotated, and key.generated/key.published events
// for an attacker's key. A client without credentials cannot publish at
// all; with a leaked NATS credential of the log's account (an operator's)
// the records land in the stream, and neither changes state: the spent
// refresh token still does not rotate, the attacker's key is not in the
// JWKS, and each record is counted as forged.
func TestLogTrust(t *testing.T) {
	op, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	opPub, _ := op.PublicKey()
	m := startApp(t, map[string]string{"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		"JWT_ALGORITHM": "ES256", "REFRESH_REUSE_GRACE": "0", "NATS_OPERATOR_KEY": opPub}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	first, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "alice", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: first.RefreshToken, ClientID: "web"}); err != nil {
		t.Fatal(err)
	}
	subj := m.Log.Subjects()
	stream, err := m.Log.JetStream().Stream(ctx, m.Log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	issued, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj.FamilyFilter(first.FamilyID)))
	if err != nil {
		t.Fatal(err)
	}
	replay := func(id string) *nats.Msg { return eventlogtest.Replay(issued, id) }
	before := lastSeq(t, m)

	// Without credentials: refused at the door of the log.
	anon, err := nats.Connect(m.SubscriberURL(), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	ajs, err := jetstream.New(anon)
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := ajs.PublishMsg(actx, replay(issued.Header.Get(eventlog.HeaderMsgID))); err == nil {
		t.Fatal("an anonymous client appended to the log")
	}
	acancel()
	if got := lastSeq(t, m); got != before {
		t.Fatalf("an anonymous publish moved the log from %d to %d", before, got)
	}

	// With a leaked credential of the log's account.
	oc, err := nats.Connect(m.SubscriberURL(), eventlog.NkeyOption(op))
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	ojs, err := jetstream.New(oc)
	if err != nil {
		t.Fatal(err)
	}
	// Verbatim, it is a duplicate for two minutes; with another ID its MAC
	// fails (the MAC binds the ID).
	if ack, err := ojs.PublishMsg(ctx, replay(issued.Header.Get(eventlog.HeaderMsgID))); err != nil || !ack.Duplicate {
		t.Fatalf("verbatim replay: %+v, %v; want a duplicate", ack, err)
	}
	forged, err := ojs.PublishMsg(ctx, replay("attacker-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: first.RefreshToken, ClientID: "web"}); err == nil {
		t.Fatal("the spent refresh token rotated after the replay")
	}
	if f, ok := m.Set.Family(first.FamilyID); !ok || f.LastSeq >= forged.Sequence {
		t.Fatalf("family after the replay (at seq %d): %+v", forged.Sequence, f)
	}

	// An attacker's key, generated and published.
	eventlogtest.PublishForgedKey(ctx, t, ojs, stream, subj, "attacker")
	// Forged records never reach the projections: wait until they are
	// counted (the replayed family event and the two key events).
	waitFor(t, "the forged records to be counted", func() bool {
		return testutilCounter(t, m, "token_service_eventlog_forged_records_total") >= 3
	})
	if _, ok := m.Set.Key("attacker"); ok {
		t.Fatal("the attacker's key became state")
	}
	for _, k := range m.Set.JWKS() {
		if k.Kid == "attacker" {
			t.Fatal("the JWKS serves the attacker's key")
		}
	}
	// A writer without the key can freeze an aggregate, not change it:
	// key changes now stop at the forged record, saying so, and the
	// active key keeps signing.
	if _, err := m.Keyring.EnsureActive(ctx); !errors.Is(err, eventlog.ErrForged) {
		t.Fatalf("the key lifecycle after the forged key events: %v, want ErrForged", err)
	}
	if _, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "bob", ClientID: "web", Audience: []string{"api"}}); err != nil {
		t.Fatalf("issuing after the forged events: %v", err)
	}
}

// testutilCounter returns the value of a counter without labels.
func testutilCounter(t *testing.T, m *app.Main, name string) float64 {
	t.Helper()
	mfs, err := m.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestSecondReplicaJoinsWithTheKey: a second tokend on the same machine
// joins the first one's embedded server with NATS_URL and the shared
// ENCRYPTION_KEY alone (it presents the nkey derived from it); the two
// serve one log. With another key it is refused.
func TestSecondReplicaJoinsWithTheKey(t *testing.T) {
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	base := func(extra map[string]string) map[string]string {
		vars := map[string]string{"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
			"JWT_ALGORITHM": "ES256", "ENCRYPTION_KEY": key}
		for k, v := range extra {
			vars[k] = v
		}
		return vars
	}
	a := startApp(t, base(nil), nil)
	b := startApp(t, base(map[string]string{"NATS_URL": a.SubscriberURL(), "NATS_REPLICAS": "1"}), nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := b.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "alice", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "web"}); err != nil {
		t.Fatalf("replica A refreshing B's family: %v", err)
	}

	cfg, err := app.ConfigFromEnv(func(k string) string {
		return base(map[string]string{"NATS_URL": a.SubscriberURL(), "NATS_REPLICAS": "1",
			"ENCRYPTION_KEY": "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4="})[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	if m, err := app.Start(sctx, cfg, discardLogger()); err == nil {
		m.Close(context.Background())
		t.Fatal("a replica with another ENCRYPTION_KEY joined the log")
	} else if !strings.Contains(err.Error(), "refused tokend's credentials") {
		t.Fatalf("refused without naming the cause: %v", err)
	}
}
