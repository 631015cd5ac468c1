package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/projections"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// TestReplicaStartBesideRestartedNode starts a replica right after the
// stream leader's NATS node was killed under load and started again, with
// no wait for the node to be current, as a rolling upgrade restarts NATS
// nodes and tokend pods together. The idle streams whose leader was on
// that node (the feed, the checkpoints' bucket, Shared Signals) may have
// no leader for seconds, and nats-server does not answer a request about
// a stream without one; the replica, whose connection lands on the
// restarted node, must still be ready within 30 s (replica.start), and
// rebuild the survivors' projections.
func TestReplicaStartBesideRestartedNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster and 3 tokend processes")
	}
	nodes := startNATSCluster(t, 3)
	// Checkpoints every second: the checkpoints' bucket exists, and its
	// lookup is part of the replica's start.
	reps := startReplicas(t, nodes, 3, map[string]string{"PROJECTION_CHECKPOINT_INTERVAL": "1"})
	victim := reps[1]

	// Load on the replicas that stay up; a call may fail while the
	// stream's leader moves.
	var acks atomic.Int64
	loadCtx, stopLoad := context.WithTimeout(context.Background(), 2*time.Minute)
	defer stopLoad()
	var wg sync.WaitGroup
	for w := range 4 {
		r := reps[[]int{0, 2}[w%2]]
		wg.Go(func() {
			clientID := fmt.Sprintf("rolling-%d", w)
			for n := 0; loadCtx.Err() == nil; n++ {
				gen, err := generate(loadCtx, r.client, &tokenv1.GenerateTokensRequest{
					Subject: fmt.Sprintf("%s-user-%d", clientID, n), ClientId: clientID, Audience: []string{"api://e2e"}, Scopes: []string{"read"}})
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				acks.Add(1)
				if _, err := refresh(loadCtx, r.client, clientID, gen.GetRefreshToken()); err == nil {
					acks.Add(1)
				}
			}
		})
	}
	defer func() { stopLoad(); wg.Wait() }()
	waitAcks := func(n int64) {
		t.Helper()
		for start := acks.Load(); acks.Load() < start+n; {
			if loadCtx.Err() != nil {
				t.Fatalf("fewer than %d acknowledged responses", n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAcks(200)
	waitCheckpointBucket(t, nodes)

	// One node leads every stream, the idle ones too, as a node that
	// stayed up while others restarted comes to: its restart leaves them
	// all without a leader for a while.
	leader := streamLeader(t, nodes)
	leadEveryStream(t, nodes, leader)
	victim.proc.kill()
	leader.proc.kill()
	// Restarted once the log's stream has a new leader (100 more
	// acknowledged responses): the idle streams, whose followers call an
	// election after 4 to 9 s without their leader, may have none yet.
	waitAcks(100)
	leader.start(t)
	restarted := time.Now()
	leader.waitHealthy(t, 30*time.Second) // JetStream on, not current
	victim.env.Extra = maps.Clone(victim.env.Extra)
	victim.env.Extra["NATS_URL"] = leader.url()
	victim.start(t)
	t.Logf("replica %s on the restarted node %s ready %s after the node's restart", victim.name, leader.name, time.Since(restarted).Round(time.Millisecond))
	waitAcks(50)
	stopLoad()
	wg.Wait()

	waitStreamHealthy(t, nodes)
	got := sameProjections(t, reps)
	t.Logf("the restarted replica's projections equal the survivors' at seq %d", got.Seq)
}

// waitCheckpointBucket waits until a replica has written the first
// projections checkpoint (its object store exists).
func waitCheckpointBucket(t *testing.T, nodes []*natsNode) {
	t.Helper()
	js := clusterJetStream(t, nodes)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := js.ObjectStore(ctx, projections.CheckpointBucket)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoints' bucket %s: %v", projections.CheckpointBucket, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leadEveryStream moves the leader of every stream to node: each stream it
// does not lead is asked to step down in its favour, until it leads them
// all.
func leadEveryStream(t *testing.T, nodes []*natsNode, node *natsNode) {
	t.Helper()
	js := clusterJetStream(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	names := js.StreamNames(ctx)
	var streams []string
	for name := range names.Name() {
		streams = append(streams, name)
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	stepdown, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": node.name}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range streams {
		var last error // of the last step-down request
		for {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatalf("stream %s: %v (last step-down: %v)", name, err, last)
			}
			if c := s.CachedInfo().Cluster; c != nil && c.Leader == node.name {
				break
			}
			// The answer may be lost while the group elects: the loop
			// looks again.
			if _, err := js.Conn().Request("$JS.API.STREAM.LEADER.STEPDOWN."+name, stepdown, 2*time.Second); err != nil {
				last = err
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s does not lead stream %s: %v (last step-down: %v)", node.name, name, ctx.Err(), last)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	t.Logf("%s leads the streams %v", node.name, streams)
}
