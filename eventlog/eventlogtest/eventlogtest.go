// Package eventlogtest starts real embedded JetStream servers for tests: a
// single node, or a cluster of nodes on loopback. Everything it starts is
// stopped by t.Cleanup.
package eventlogtest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/auth-platform/tokenservice/eventlog"
)

// Node is one running server with an in-process connection.
type Node struct {
	Embedded *eventlog.Embedded
	Conn     *nats.Conn
	Dir      string
}

// SingleNode starts one server with file storage in a temporary directory.
func SingleNode(t testing.TB) *Node {
	t.Helper()
	dir := t.TempDir()
	e, err := eventlog.StartEmbedded(eventlog.EmbeddedConfig{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := e.Connect()
	if err != nil {
		e.Shutdown()
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); e.Shutdown() })
	return &Node{Embedded: e, Conn: nc, Dir: dir}
}

// Cluster starts n servers that form one JetStream cluster on loopback and
// waits until the cluster has a meta leader.
func Cluster(t testing.TB, n int) []*Node {
	t.Helper()
	ports := FreePorts(t, n)
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	nodes := make([]*Node, n)
	for i := range n {
		dir := t.TempDir()
		e, err := eventlog.StartEmbedded(eventlog.EmbeddedConfig{
			DataDir:    dir,
			Listen:     "127.0.0.1:0",
			ServerName: fmt.Sprintf("n%d", i+1),
			Cluster: &eventlog.ClusterConfig{
				Name:   "tokens-test",
				Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]),
				Routes: routes,
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = &Node{Embedded: e, Dir: dir}
		t.Cleanup(e.Shutdown)
	}
	for _, nd := range nodes {
		nc, err := nd.Embedded.Connect()
		if err != nil {
			t.Fatal(err)
		}
		nd.Conn = nc
		t.Cleanup(nc.Close)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, nd := range nodes {
		for !nd.Embedded.Server().JetStreamIsCurrent() || nd.Embedded.Server().JetStreamIsLeader() == false && !hasLeader(nodes) {
			if time.Now().After(deadline) {
				t.Fatal("cluster formed no meta leader within 30s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nodes
}

func hasLeader(nodes []*Node) bool {
	for _, nd := range nodes {
		if nd.Embedded.Server().JetStreamIsLeader() {
			return true
		}
	}
	return false
}

// Key is the ENCRYPTION_KEY of the logs tests open: a fixed test value.
const Key = "eventlogtest key, 32 bytes long!"

// Auth returns the authenticator under Key, which OpenLog uses when the
// configuration names none.
func Auth(t testing.TB) *eventlog.Authenticator {
	t.Helper()
	a, err := eventlog.NewAuthenticator([]byte(Key))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// OpenLog opens the event log on nc with a deadline and fails t on error.
// Without cfg.Auth it authenticates events under Key.
func OpenLog(t testing.TB, nc *nats.Conn, cfg eventlog.Config) *eventlog.Log {
	t.Helper()
	if cfg.Auth == nil {
		cfg.Auth = Auth(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := eventlog.Open(ctx, nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Append appends ev after the last message on filter (ev's aggregate),
// whatever it is (Log.AppendNext), and fails t on error: for tests that
// write events without a write model.
func Append(ctx context.Context, t testing.TB, l *eventlog.Log, ev eventlog.Event, filter string) uint64 {
	t.Helper()
	seq, err := l.AppendNext(ctx, ev, filter)
	if err != nil {
		t.Fatalf("append %s: %v", ev.Subject, err)
	}
	return seq
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
