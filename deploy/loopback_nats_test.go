package deploy

import (
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
)

// lintLoopbackNATS runs deploy/lint -nats-config on the configurations
// run.sh wrote into work, which must carry authorization and TLS; then on
// a copy of one with no_auth_user, which it must refuse (so the check is
// shown to run on these files).
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
	open := filepath.Join(t.TempDir(), "open.conf")
	if err := os.WriteFile(open, append(b, []byte("\nno_auth_user: anyone\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin, "-nats-config", open).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "connections without credentials get in") {
		t.Fatalf("deploy/lint -nats-config accepted a configuration with no_auth_user: %v\n%s", err, out)
	}
}

// assertLoopbackNATS checks the running loopback cluster's authorization
// with real clients: a connection without credentials is refused; the
// feed's admin creates TOKENS_FEED from deploy/nats-feed.json (the
// accounts' exports and imports at work); after tokend-1 revokes family
// fid, the subscriber user reads the revocation from the feed, and cannot
// publish to the log's subjects.
func assertLoopbackNATS(t *testing.T, work string, natsClientBase, tokendBase int, fid string) {
	t.Helper()
	url := fmt.Sprintf("nats://127.0.0.1:%d", natsClientBase)
	ca := nats.RootCAs(filepath.Join(work, "tls", "ca.pem"))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
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
	sub, err := jetstream.New(subNC)
	if err != nil {
		t.Fatal(err)
	}
	want := "token.family." + fid + ".revoked"
	cons, err := sub.OrderedConsumer(ctx, feed.Name, jetstream.OrderedConsumerConfig{FilterSubjects: []string{want}})
	if err != nil {
		t.Fatalf("the subscriber reads %s: %v", feed.Name, err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
	if err != nil {
		t.Fatalf("the subscriber found no %s on %s: %v", want, feed.Name, err)
	}
	if msg.Subject() != want {
		t.Fatalf("the feed gave %s, want %s", msg.Subject(), want)
	}

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
