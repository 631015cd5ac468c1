package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

// natsNode is one nats-server process of a JetStream cluster on loopback.
type natsNode struct {
	name                   string
	client, route, monitor int
	dir, conf              string
	proc                   *child
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.client) }

// startNATSCluster starts n nats-server processes forming one JetStream
// cluster whose one account admits only the service's user (the nkey
// derived from testEncryptionKey), and waits until each answers its
// health check.
func startNATSCluster(t *testing.T, n int) []*natsNode {
	t.Helper()
	return startNATS(t, n, true)
}

// startNATS starts n nodes; without secured, clients need no credentials
// and may do anything (what tokend must refuse).
func startNATS(t testing.TB, n int, secured bool) []*natsNode {
	t.Helper()
	accounts := ""
	if secured {
		pub, err := serviceKey(t).PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		accounts = fmt.Sprintf("accounts {\n  TOKENS {\n    jetstream: enabled\n    users: [ { nkey: %s } ]\n  }\n}\n", pub)
	}
	ports := eventlogtest.FreePorts(t, 3*n)
	nodes := make([]*natsNode, n)
	routes := make([]string, n)
	for i := range n {
		nodes[i] = &natsNode{name: fmt.Sprintf("n%d", i+1), client: ports[3*i], route: ports[3*i+1], monitor: ports[3*i+2], dir: t.TempDir()}
		routes[i] = fmt.Sprintf("%q", fmt.Sprintf("nats-route://127.0.0.1:%d", nodes[i].route))
	}
	for _, nd := range nodes {
		nd.conf = filepath.Join(nd.dir, "nats.conf")
		cluster := ""
		if n > 1 {
			cluster = fmt.Sprintf("cluster {\n  name: \"tokens-e2e\"\n  listen: \"127.0.0.1:%d\"\n  routes: [%s]\n}\n", nd.route, strings.Join(routes, ", "))
		}
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
http: "127.0.0.1:%d"
jetstream { store_dir: %q }
%s%s`, nd.name, nd.client, nd.monitor, filepath.Join(nd.dir, "js"), cluster, accounts)
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range nodes {
		nd.start(t)
	}
	for _, nd := range nodes {
		nd.waitHealthy(t, 30*time.Second)
	}
	return nodes
}

// start starts the node's process (again, after a kill: same store).
func (n *natsNode) start(t testing.TB) {
	t.Helper()
	n.proc = startProcess(t, natsServerBinary(t), []string{"-c", n.conf}, []string{"HOME=" + n.dir})
}

// waitHealthy waits until the node's JetStream is enabled (it may still
// be catching up with the cluster).
func (n *natsNode) waitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	n.waitHealth(t, timeout, "?js-enabled-only=true")
}

func (n *natsNode) waitHealth(t testing.TB, timeout time.Duration, query string) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz%s", n.monitor, query))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if !n.proc.running() {
			t.Fatalf("nats-server %s exited: %s", n.name, n.proc.logTail(4<<10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server %s not healthy within %s (%v)", n.name, timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func clusterURLs(nodes []*natsNode) string {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.url()
	}
	return strings.Join(urls, ",")
}

// replica is one tokend process of a multi-replica deployment.
type replica struct {
	name   string
	env    childEnv
	proc   *child
	client tokenv1connect.TokenServiceClient
}

func (r *replica) base() string { return r.env.baseURL() }

// startReplicas starts n tokend processes on the cluster, with the same
// ENCRYPTION_KEY, and waits until each is ready.
func startReplicas(t *testing.T, nodes []*natsNode, n int, extra map[string]string) []*replica {
	t.Helper()
	reps := make([]*replica, n)
	for i := range n {
		vars := map[string]string{"NATS_URL": clusterURLs(nodes), "NATS_REPLICAS": "3"}
		for k, v := range extra {
			vars[k] = v
		}
		reps[i] = &replica{name: string(rune('A' + i)), env: newChildEnv(t, vars)}
		reps[i].start(t)
	}
	return reps
}

func (r *replica) start(t *testing.T) {
	t.Helper()
	r.proc = startChild(t, r.env)
	r.proc.waitReady(r.base(), 30*time.Second)
	if r.client == nil { // a restarted replica keeps its address: the load's clients keep working
		r.client = tokenClient(http1Client(), r.base())
	}
}

// clusterJetStream connects to the cluster as an outside client; the
// connection closes when the test ends.
func clusterJetStream(t *testing.T, nodes []*natsNode) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(clusterURLs(nodes), serviceNkey(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// streamLeader returns the node that leads the TOKENS stream.
func streamLeader(t *testing.T, nodes []*natsNode) *natsNode {
	t.Helper()
	js := clusterJetStream(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, streamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if info.Cluster != nil && n.name == info.Cluster.Leader {
			return n
		}
	}
	t.Fatalf("no stream leader among the nodes: %+v", info.Cluster)
	return nil
}

type digest struct {
	Seq    uint64 `json:"seq"`
	Digest string `json:"digest"`
}

func projectionDigest(t *testing.T, base string) digest {
	t.Helper()
	resp, err := http.Get(base + "/projections/digest")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d digest
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// sameProjections waits until every replica's projections reached the
// same position, and requires their digests to be equal there and no
// record counted as forged by any of them.
func sameProjections(t *testing.T, reps []*replica) digest {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ds := make([]digest, len(reps))
		same := true
		for i, r := range reps {
			ds[i] = projectionDigest(t, r.base())
			same = same && ds[i].Seq == ds[0].Seq
		}
		if same {
			for i, d := range ds {
				if d.Digest != ds[0].Digest {
					t.Fatalf("replica %s at seq %d has digest %s, replica %s %s", reps[i].name, d.Seq, d.Digest, reps[0].name, ds[0].Digest)
				}
			}
			// Only tokend wrote the log: a failover, a redelivery or a
			// replay is never taken for a forgery.
			for _, r := range reps {
				if n := forgedCount(t, http1Client(), r.base()); n != 0 {
					t.Fatalf("replica %s counted %v forged records; tokend alone wrote the log", r.name, n)
				}
			}
			return ds[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas did not reach the same position within 30s: %+v", ds)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitStreamHealthy waits until the TOKENS stream has a leader and every
// replica is current: after a node restarts, reads may otherwise meet a
// stream that is still catching up ("no responders").
func waitStreamHealthy(t *testing.T, nodes []*natsNode) {
	t.Helper()
	js := clusterJetStream(t, nodes)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		healthy := false
		var last any
		if s, err := js.Stream(ctx, streamName); err == nil {
			if info, err := s.Info(ctx); err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
				healthy = len(info.Cluster.Replicas) == len(nodes)-1
				for _, r := range info.Cluster.Replicas {
					healthy = healthy && r.Current && !r.Offline
				}
				last = info.Cluster
			}
		} else {
			last = err
		}
		cancel()
		if healthy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream not healthy within 60s: %+v", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
