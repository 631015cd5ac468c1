package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"

	"github.com/auth-platform/tokenservice/projections/subscriber"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

// propagationBound is how long a revocation may take to reach another
// replica's projections and a subscriber in these tests. It is a liveness
// bound, far above what the propagation benchmark measures (see README).
const propagationBound = 5 * time.Second

func genOn(ctx context.Context, t *testing.T, c tokenv1connect.TokenServiceClient, subject string) *tokenv1.TokenResponse {
	t.Helper()
	resp, err := generate(ctx, c, &tokenv1.GenerateTokensRequest{Subject: subject, ClientId: "web", Audience: []string{"api://e2e"}, Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func introspectActive(ctx context.Context, t *testing.T, c tokenv1connect.TokenServiceClient, token string) bool {
	t.Helper()
	resp, err := c.IntrospectToken(ctx, connect.NewRequest(&tokenv1.IntrospectTokenRequest{Token: token}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetActive()
}

// TestReplicas runs three tokend processes on a three-node JetStream
// cluster (nats-server processes on loopback).
func TestReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster and 3 tokend processes")
	}
	nodes := startNATSCluster(t, 3)
	reps := startReplicas(t, nodes, 3, nil)
	a, b, c := reps[0], reps[1], reps[2]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A resource server's subscriber on the third NATS node.
	nc, err := nats.Connect(nodes[2].url(), serviceNkey(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var subErrs errorLog
	sub, err := subscriber.New(nc, subscriber.Config{OnError: subErrs.add})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopSub := context.WithCancel(ctx)
	subDone := make(chan struct{})
	go func() { defer close(subDone); _ = sub.Run(sctx) }()
	defer func() { stopSub(); <-subDone }()

	t.Run("revoke on A, refresh refused on B and C at once", func(t *testing.T) {
		for i := range 30 {
			issuedOn := reps[i%3]
			tok := genOn(ctx, t, issuedOn.client, fmt.Sprintf("user-%d", i))
			// Read-your-writes across replicas: the new family refreshes
			// at once on another replica.
			next, err := refresh(ctx, reps[(i+1)%3].client, "web", tok.GetRefreshToken())
			if err != nil {
				t.Fatalf("refresh on %s of a family issued on %s: %v", reps[(i+1)%3].name, issuedOn.name, err)
			}
			var target *tokenv1.RevokeTokenRequest
			if i%2 == 0 {
				target = &tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_RefreshToken{RefreshToken: next.GetRefreshToken()}}
			} else {
				target = &tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_AccessToken{AccessToken: tok.GetAccessToken()}}
			}
			if resp, err := a.client.RevokeToken(ctx, connect.NewRequest(target)); err != nil || resp.Msg.GetRevokedFamilies() != 1 {
				t.Fatalf("revoke on A: %v %v", resp, err)
			}
			for _, r := range []*replica{b, c} {
				_, err := refresh(ctx, r.client, "web", next.GetRefreshToken())
				if connect.CodeOf(err) != connect.CodeInvalidArgument {
					t.Fatalf("refresh on %s right after the revocation on A: %v, want invalid_grant", r.name, err)
				}
			}
		}
	})

	t.Run("introspection and subscriber see the revocation within the bound", func(t *testing.T) {
		tok := genOn(ctx, t, a.client, "erin")
		for _, r := range []*replica{b, c} {
			if !introspectActive(ctx, t, r.client, tok.GetAccessToken()) {
				t.Fatalf("a live access token is inactive on %s", r.name)
			}
		}
		claims := subscriber.Claims{Subject: "erin", FamilyID: tok.GetFamilyId(), IssuedAt: time.Now()}
		if sub.IsRevoked(claims) {
			t.Fatal("the subscriber reports a live family revoked")
		}
		if _, err := a.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: tok.GetFamilyId()}})); err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		seen := map[string]time.Duration{}
		for len(seen) < 3 {
			for _, r := range []*replica{b, c} {
				if _, ok := seen[r.name]; !ok && !introspectActive(ctx, t, r.client, tok.GetAccessToken()) {
					seen[r.name] = time.Since(acked)
				}
			}
			if _, ok := seen["subscriber"]; !ok && sub.IsRevoked(claims) {
				seen["subscriber"] = time.Since(acked)
			}
			if time.Since(acked) > propagationBound {
				t.Fatalf("after %s only %v saw the revocation (the subscriber at feed seq %d; its errors: %v)", propagationBound, seen, sub.Seq(), subErrs.all())
			}
			time.Sleep(time.Millisecond)
		}
		t.Logf("revocation visible after: %v", seen)
		if !introspectActive(ctx, t, b.client, genOn(ctx, t, c.client, "erin").GetAccessToken()) {
			t.Fatal("a new family of the same subject is inactive")
		}
	})

	t.Run("WatchRevocations on C streams a revocation made on A", func(t *testing.T) {
		wctx, stop := context.WithTimeout(ctx, 30*time.Second)
		defer stop()
		stream, err := c.client.WatchRevocations(wctx, connect.NewRequest(&tokenv1.WatchRevocationsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		if !stream.Receive() || stream.Msg().GetHeartbeat() == nil {
			t.Fatalf("no heartbeat first: %v %v", stream.Msg(), stream.Err())
		}
		tok := genOn(ctx, t, b.client, "frank")
		if _, err := a.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_Subject{Subject: "frank"}})); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for !got["cutoff"] || !got["family"] {
			if !stream.Receive() {
				t.Fatalf("stream ended: %v (got %v)", stream.Err(), got)
			}
			r := stream.Msg().GetRevocation()
			switch {
			case r == nil:
			case r.GetSubject() == "frank":
				got["cutoff"] = true
			case r.GetFamilyId() == tok.GetFamilyId():
				got["family"] = true
			}
		}
	})

	t.Run("ListFamilies on every replica reads the one read model", func(t *testing.T) {
		tok := genOn(ctx, t, a.client, "grace")
		genOn(ctx, t, b.client, "grace")
		if _, err := c.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: tok.GetFamilyId()}})); err != nil {
			t.Fatal(err)
		}
		for _, r := range reps {
			deadline := time.Now().Add(propagationBound)
			for {
				resp, err := r.client.ListFamilies(ctx, connect.NewRequest(&tokenv1.ListFamiliesRequest{Subject: "grace", IncludeInactive: true}))
				if err != nil {
					t.Fatal(err)
				}
				fs := resp.Msg.GetFamilies()
				if len(fs) == 2 && fs[0].GetStatus() == "revoked" && fs[1].GetStatus() == "active" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("ListFamilies on %s: %v", r.name, fs)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	})

	sameProjections(t, reps)
}

// TestReplicaFailures kills the stream leader's NATS node under load, then
// a tokend replica, and checks that nothing acknowledged is lost, that the
// service keeps serving, and that a restarted replica rebuilds the same
// projections.
func TestReplicaFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster and 3 tokend processes")
	}
	nodes := startNATSCluster(t, 3)
	reps := startReplicas(t, nodes, 3, nil)
	led := newLedger()

	// Load on every replica: chains of refreshes; a failed call starts a
	// new chain (its outcome is unknown), and is counted.
	var failures, afterKill atomic.Int64
	var killed atomic.Bool
	loadCtx, stopLoad := context.WithTimeout(context.Background(), 90*time.Second)
	defer stopLoad()
	var wg sync.WaitGroup
	for w := range 6 {
		r := reps[w%3]
		wg.Go(func() {
			clientID := fmt.Sprintf("failover-%d", w)
			for n := 0; loadCtx.Err() == nil; n++ {
				gen, err := generate(loadCtx, r.client, &tokenv1.GenerateTokensRequest{
					Subject: fmt.Sprintf("%s-user-%d", clientID, n), ClientId: clientID, Audience: []string{"api://e2e"}, Scopes: []string{"read"}})
				if err != nil {
					failures.Add(1)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				if killed.Load() {
					afterKill.Add(1)
				}
				fid, rt := gen.GetFamilyId(), gen.GetRefreshToken()
				led.ack(fid, clientID, rt, 0)
				for rot := 1; rot <= rotationsPerChain && loadCtx.Err() == nil; rot++ {
					resp, err := refresh(loadCtx, r.client, clientID, rt)
					if err != nil {
						failures.Add(1)
						break
					}
					rt = resp.GetRefreshToken()
					led.ack(fid, clientID, rt, rot)
					if killed.Load() {
						afterKill.Add(1)
					}
				}
			}
		})
	}
	defer func() { stopLoad(); wg.Wait() }()
	waitAcks := func(n int) {
		t.Helper()
		for start := led.count(); led.count() < start+n; {
			if loadCtx.Err() != nil {
				t.Fatalf("fewer than %d acknowledged responses (failures %d)", n, failures.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	waitAcks(100)
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d calls failed before any kill", f)
	}
	leader := streamLeader(t, nodes)
	killed.Store(true)
	leader.proc.kill()
	killedAt := time.Now()
	t.Logf("SIGKILL of the stream leader %s after %d acknowledged responses", leader.name, led.count())
	waitAcks(200)
	t.Logf("after the leader's kill: %d responses acknowledged, %d calls failed while a new leader was elected; first 200 acks within %s",
		afterKill.Load(), failures.Load(), time.Since(killedAt).Round(time.Millisecond))
	leader.start(t)
	// Back, not necessarily current: the replica below may start while
	// the node still catches up (TestReplicaStartBesideRestartedNode makes
	// sure of it).
	leader.waitHealthy(t, 60*time.Second)

	// Kill a tokend replica: the others keep serving without a failure.
	victim := reps[1]
	victim.proc.kill()
	failuresBefore := failures.Load()
	waitAcks(100)
	// The load workers of the killed replica fail; the others must not.
	t.Logf("with replica %s killed: %d more failures (its own workers)", victim.name, failures.Load()-failuresBefore)
	for _, r := range []*replica{reps[0], reps[2]} {
		tok := genOn(loadCtx, t, r.client, "survivor")
		if _, err := refresh(loadCtx, r.client, "web", tok.GetRefreshToken()); err != nil {
			t.Fatalf("replica %s after %s was killed: %v", r.name, victim.name, err)
		}
	}
	victim.start(t)
	waitAcks(50)
	stopLoad()
	wg.Wait()

	waitStreamHealthy(t, nodes)
	d := checkDurability(t, led.snapshot(), readFamilies(t, clusterURLs(nodes)))
	t.Logf("acknowledged: %d families, %d rotations; stored but unacknowledged: %d rotations, %d families",
		d.Families, d.Rotations, d.LostResponses, d.Orphans)
	got := sameProjections(t, reps)
	t.Logf("the restarted replica's projections equal the survivors' at seq %d", got.Seq)
}

// errorLog collects the errors a background reader reports.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) add(err error) { l.mu.Lock(); l.errs = append(l.errs, err); l.mu.Unlock() }

func (l *errorLog) all() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}
