package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/projections/subscriber"
)

// lintLoopbackNATS runs deploy/lint -nats-config on the configurations
// run.sh wrote into work, which must carry authorization and TLS; then on
// a copy of one with no_auth_user and one that exports the log to
// SUBSCRIBERS, which it must refuse (so the checks are shown to run on
// these files).
func lintLoopbackNATS(t *testing.T, work string) {
	t.Helper()
	confs, err := filepath.Glob(filepath.Join(work, "nats-*.conf"))
	if err != nil || len(confs) != 3 {
		t.Fatalf("run.sh wrote %q (%v), want 3 NATS configurations", confs, err)
	}
	bin := buildLint(t)
	out, err := exec.Command(bin, append([]string{"-nats-config"}, confs...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the 3 NATS configurations are authorized") {
		t.Fatalf("deploy/lint -nats-config on the loopback cluster: %v\n%s", err, out)
	}
	b, err := os.ReadFile(confs[0])
	if err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(filepath.Dir(confs[0]), "open.conf") // next to subscribers.conf, which it includes
	t.Cleanup(func() { os.Remove(open) })
	if err := os.WriteFile(open, append(b, []byte("\nno_auth_user: anyone\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin, "-nats-config", open).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "connections without credentials get in") {
		t.Fatalf("deploy/lint -nats-config accepted a configuration with no_auth_user: %v\n%s", err, out)
	}
	// The old layout, where SUBSCRIBERS sourced the log itself.
	const feedExport = `{ service: "$JS.API.CONSUMER.CREATE.TOKENS_FEED.*.tokenfeed.>", response_type: stream, accounts: [SUBSCRIBERS] }`
	if !bytes.Contains(b, []byte(feedExport)) {
		t.Fatalf("%s does not export the feed as %s", confs[0], feedExport)
	}
	leak := filepath.Join(filepath.Dir(confs[0]), "leak.conf") // next to subscribers.conf, which it includes
	t.Cleanup(func() { os.Remove(leak) })
	logExport := `{ service: "$JS.API.CONSUMER.CREATE.TOKENS.*.token.family.*.revoked", response_type: stream, accounts: [SUBSCRIBERS] }`
	if err := os.WriteFile(leak, bytes.Replace(b, []byte(feedExport), []byte(feedExport+"\n      "+logExport), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin, "-nats-config", leak).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "which reaches the log") {
		t.Fatalf("deploy/lint -nats-config accepted a configuration that exports the log: %v\n%s", err, out)
	}
}

// assertLoopbackNATS checks the running loopback cluster's authorization
// with real clients: a connection without credentials is refused; the
// feed's admin creates TOKENS_FEED from deploy/nats-feed.json (a mirror of
// the feed tokend writes in TOKENS, through the accounts' exports and
// imports); after tokend-1 revokes family fid, the resource server (user
// subscriber) reads the revocation from the mirror through the consumer
// named after its public key, finds only feed messages there (tokenfeed.
// subjects, proto/token/feed/v1 payloads: no log event, so no secret
// hash and no sealed key), is refused any other consumer, and cannot
// publish to the log's subjects.
func assertLoopbackNATS(t *testing.T, work string, natsClientBase, tokendBase int, fid string) {
	t.Helper()
	url := fmt.Sprintf("nats://127.0.0.1:%d", natsClientBase)
	ca := nats.RootCAs(filepath.Join(work, "tls", "ca.pem"))
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	nc, err := nats.Connect(url, ca, nats.NoReconnect(), nats.Timeout(5*time.Second))
	if err == nil {
		nc.Close()
		t.Fatal("a connection without credentials was accepted")
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("a connection without credentials: %v, want an authorization violation", err)
	}

	connect := func(user string, opts ...nats.Option) *nats.Conn {
		t.Helper()
		seed, err := nats.NkeyOptionFromSeed(filepath.Join(work, "nkeys", user+".nk"))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(url, append([]nats.Option{ca, seed, nats.Name("loopback-test-" + user)}, opts...)...)
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}

	b, err := os.ReadFile("nats-feed.json")
	if err != nil {
		t.Fatal(err)
	}
	var feed jetstream.StreamConfig
	if err := json.Unmarshal(b, &feed); err != nil {
		t.Fatalf("nats-feed.json: %v", err)
	}
	admin, err := jetstream.New(connect("feed-admin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateOrUpdateStream(ctx, feed); err != nil {
		t.Fatalf("the feed admin creates %s: %v", feed.Name, err)
	}

	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/token.v1.TokenService/RevokeToken", tokendBase),
		"application/json", strings.NewReader(fmt.Sprintf(`{"family_id":%q,"reason":"admin"}`, fid)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("RevokeToken: %s %s", resp.Status, body)
	}

	violations := make(chan error, 4)
	subNC := connect("subscriber", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case violations <- err:
		default:
		}
	}))
	consumer, err := subscriber.ConsumerName(filepath.Join(work, "nkeys", "subscriber.nk"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := jetstream.New(subNC)
	if err != nil {
		t.Fatal(err)
	}

	// The library resource servers embed, with the consumer named after
	// the user's key, finds the revocation.
	got := make(chan subscriber.Revocation, 16)
	rs, err := subscriber.New(subNC, subscriber.Config{Stream: feed.Name, Consumer: consumer,
		OnRevocation: func(r subscriber.Revocation) { got <- r }})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rs.Run(rctx) }()
	func() {
		defer func() { stop(); <-done }()
		for {
			select {
			case r := <-got:
				if r.FamilyID == fid {
					if !rs.IsRevoked(subscriber.Claims{Subject: "interrupt", FamilyID: fid, IssuedAt: time.Now().Add(-time.Minute)}) {
						t.Errorf("the subscriber read the revocation of %s but does not count it", fid)
					}
					return
				}
			case <-ctx.Done():
				t.Fatalf("the subscriber read no revocation of family %s from %s", fid, feed.Name)
			}
		}
	}()

	// Every message the resource server can read is a feed message.
	cons, err := sub.CreateConsumer(ctx, feed.Name, jetstream.ConsumerConfig{
		Name: consumer, FilterSubject: "tokenfeed.>", AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		t.Fatalf("the subscriber's consumer %s on %s: %v", consumer, feed.Name, err)
	}
	n := cons.CachedInfo().NumPending
	if n == 0 {
		t.Fatalf("%s is empty", feed.Name)
	}
	batch, err := cons.FetchNoWait(int(n))
	if err != nil {
		t.Fatal(err)
	}
	var read uint64
	revoked := false
	for m := range batch.Messages() {
		read++
		if !strings.HasPrefix(m.Subject(), "tokenfeed.") {
			t.Errorf("the subscriber read %s from %s: not a feed subject", m.Subject(), feed.Name)
		}
		if schema := m.Headers().Get(subscriber.HeaderSchema); !strings.HasPrefix(schema, "token.feed.v1.") {
			t.Errorf("%s: schema %q, want a token.feed.v1 message", m.Subject(), schema)
		}
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := subscriber.Decode(md.Sequence.Stream, md.Timestamp, m.Headers(), m.Data()); err != nil {
			t.Errorf("%s: not a feed message: %v", m.Subject(), err)
		}
		revoked = revoked || m.Subject() == "tokenfeed.family."+fid+".revoked"
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	if read != n || !revoked {
		t.Errorf("read %d of %d messages, the revocation of %s among them: %v", read, n, fid, revoked)
	}
	if err := sub.DeleteConsumer(ctx, feed.Name, consumer); err != nil {
		t.Errorf("the subscriber deletes its consumer: %v", err)
	}

	// Another consumer's name is refused: the API subject carries it.
	octx, ocancel := context.WithTimeout(ctx, 3*time.Second)
	defer ocancel()
	if _, err := sub.CreateConsumer(octx, feed.Name, jetstream.ConsumerConfig{Name: "other", FilterSubject: "tokenfeed.>"}); err == nil {
		t.Error("the subscriber created a consumer not named after its key")
	}
	drain := func() {
		for {
			select {
			case <-violations:
			default:
				return
			}
		}
	}
	drain()

	if err := subNC.Publish("token.family."+fid+".issued", []byte("forged")); err != nil {
		t.Fatal(err)
	}
	if err := subNC.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-violations:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("the subscriber's publish to the log: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the subscriber published to the log's subjects without a permissions violation")
	}
}
