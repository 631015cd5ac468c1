package e2e

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// TestRefusesOpenNATS: tokend refuses to start on a nats-server that lets
// a client without credentials append to the log, and says why; the
// escape hatch starts it on loopback.
func TestRefusesOpenNATS(t *testing.T) {
	nodes := startNATS(t, 1, false)
	env := newChildEnv(t, map[string]string{"NATS_URL": nodes[0].url(), "NATS_REPLICAS": "1"})
	c := startChild(t, env)
	if !c.wait(60 * time.Second) {
		t.Fatalf("tokend started on an open NATS server:\n%s", c.logTail(4<<10))
	}
	if log := c.logTail(16 << 10); !strings.Contains(log, "refusing to start") || !strings.Contains(log, "without credentials can append") {
		t.Fatalf("tokend stopped without naming the cause:\n%s", log)
	}
	env = newChildEnv(t, map[string]string{"NATS_URL": nodes[0].url(), "NATS_REPLICAS": "1", "NATS_INSECURE_ALLOW_ANONYMOUS_APPEND": "true"})
	c = startChild(t, env)
	c.waitReady(env.baseURL(), 60*time.Second)
	if !strings.Contains(c.logTail(16<<10), "NATS_INSECURE_ALLOW_ANONYMOUS_APPEND") {
		t.Fatalf("the escape hatch was used without a warning:\n%s", c.logTail(4<<10))
	}
}

// TestLogTrustCluster: the two experiments of the log-trust review on a
// 3-node cluster whose account admits only the service's user, with two
// replicas. A client without credentials is refused at the door. With the
// service's own credential leaked (the worst case short of ENCRYPTION_KEY),
// a captured family.issued event published again and an attacker's
// key.generated/key.published change no state on either replica: the spent
// refresh token does not rotate, the JWKS does not serve the key, and both
// replicas count the records as forged.
func TestLogTrustCluster(t *testing.T) {
	nodes := startNATSCluster(t, 3)
	reps := startReplicas(t, nodes, 2, nil)
	a := reps[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	first, err := generate(ctx, a.client, &tokenv1.GenerateTokensRequest{Subject: "alice", ClientId: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := refresh(ctx, a.client, "web", first.GetRefreshToken()); err != nil {
		t.Fatal(err)
	}

	if nc, err := nats.Connect(clusterURLs(nodes), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a client without credentials connected to the cluster")
	}

	js := clusterJetStream(t, nodes) // the leaked credential
	s := eventlog.NewSubjects(subjectPrefix)
	stream, err := js.Stream(ctx, streamName)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(s.FamilyFilter(first.GetFamilyId())))
	if err != nil {
		t.Fatal(err)
	}
	replay := eventlogtest.Replay(issued, "attacker-replay")
	if _, err := js.PublishMsg(ctx, replay); err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if _, err := refresh(ctx, r.client, "web", first.GetRefreshToken()); err == nil {
			t.Fatalf("replica %s rotated the spent refresh token after the replay", r.name)
		}
	}

	// The attacker's key: a copy of the first key's generated event under
	// another ID, then published, after the keys' last event.
	eventlogtest.PublishForgedKey(ctx, t, js, stream, s, "attacker")
	hc := http1Client()
	for _, r := range reps {
		deadline := time.Now().Add(30 * time.Second)
		for forgedCount(t, hc, r.base()) < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("replica %s counted %v forged records, want 3", r.name, forgedCount(t, hc, r.base()))
			}
			time.Sleep(50 * time.Millisecond)
		}
		set, _, _ := fetchJWKS(t, hc, r.base())
		for _, k := range set.Keys {
			if k.KeyID == "attacker" {
				t.Fatalf("replica %s serves the attacker's key", r.name)
			}
		}
		if _, err := generate(ctx, r.client, &tokenv1.GenerateTokensRequest{Subject: "bob", ClientId: "web", Audience: []string{"api"}}); err != nil {
			t.Fatalf("replica %s cannot issue after the forged events: %v", r.name, err)
		}
	}
}

// forgedCount reads token_service_eventlog_forged_records_total of a
// replica's /metrics.
func forgedCount(t *testing.T, hc *http.Client, base string) float64 {
	t.Helper()
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "token_service_eventlog_forged_records_total "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	t.Fatalf("no forged-records metric at %s", base)
	return 0
}
