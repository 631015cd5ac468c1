package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

// TestKill SIGKILLs tokend under load, restarts it on the same data
// directory and checks that every acknowledged response survived: the
// family and each acknowledged rotation are in the stream, and the last
// acknowledged refresh token still works unless a rotation whose response
// was lost at the kill spent it. It runs with the default disk sync
// interval and with NATS_SYNC=always: a process kill (not a machine crash)
// must lose nothing acknowledged in either mode.
func TestKill(t *testing.T) {
	for _, tc := range []struct {
		name string
		sync string // NATS_SYNC; empty for the default
	}{
		{name: "sync-default"},
		{name: "sync-always", sync: "always"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			extra := map[string]string{}
			if tc.sync != "" {
				extra["NATS_SYNC"] = tc.sync
			}
			runKillScenario(t, newChildEnv(t, extra))
		})
	}
}

const (
	killWorkers       = 8
	rotationsPerChain = 4                // refreshes of each family before a new one
	killAfter         = time.Second      // load before the kill
	minAcksBeforeKill = 40               // the kill must hit a service under load
	maxLoad           = 20 * time.Second // bound on the load if acks come slowly
)

func runKillScenario(t *testing.T, env childEnv) {
	first := time.Now()
	c := startChild(t, env)
	c.waitReady(env.baseURL(), 60*time.Second)
	t.Logf("tokend pid %d ready in %s", c.pid, time.Since(first).Round(time.Millisecond))

	rpc := tokenClient(http1Client(), env.baseURL())
	led := newLedger()
	var killed atomic.Bool
	var unexpected atomic.Int64 // errors before the kill: the service failed under load
	loadCtx, stopLoad := context.WithTimeout(context.Background(), maxLoad)
	defer stopLoad()
	var wg sync.WaitGroup
	for w := range killWorkers {
		wg.Go(func() {
			runChains(loadCtx, t, rpc, fmt.Sprintf("kill-client-%d", w), led, &killed, &unexpected)
		})
	}
	// Also on an early failure: no worker may outlive the test.
	defer func() { stopLoad(); wg.Wait() }()

	// Kill once the load ran for killAfter and produced enough acks; the
	// workers are still sending, so calls are in flight at the kill.
	start := time.Now()
	for time.Since(start) < killAfter || led.count() < minAcksBeforeKill {
		if time.Since(start) > maxLoad/2 {
			t.Fatalf("only %d acknowledged responses after %s", led.count(), maxLoad/2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	killed.Store(true) // before the signal: every error after it may be the kill's
	c.kill()
	t.Logf("SIGKILL pid %d after %s and %d acknowledged responses; exit status %v", c.pid, time.Since(start).Round(time.Millisecond), led.count(), c.state)
	wg.Wait() // each worker stops at its first failed call
	stopLoad()
	if n := unexpected.Load(); n > 0 {
		t.Fatalf("%d calls failed before the kill", n)
	}

	restart := time.Now()
	c2 := startChild(t, env)
	c2.waitReady(env.baseURL(), 60*time.Second)
	t.Logf("restarted on the same DATA_DIR: ready in %s", time.Since(restart).Round(time.Millisecond))

	acked := led.snapshot()
	d := checkDurability(t, acked, readFamilies(t, env.natsURL()))
	t.Logf("acknowledged: %d families, %d rotations; stored but unacknowledged: %d rotations, %d families",
		d.Families, d.Rotations, d.LostResponses, d.Orphans)
	if d.Families < minAcksBeforeKill/(rotationsPerChain+1) {
		t.Errorf("only %d families acknowledged: the load did not run", d.Families)
	}

	// The public API agrees with the stream: the last acknowledged token
	// of a family still refreshes, exactly once, unless a stored rotation
	// whose response was lost spent it (then it is refused).
	rpc2 := tokenClient(http1Client(), env.baseURL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var refreshed, refused atomic.Int64
	forEach(d.Current, 4, func(fid string) {
		a := acked[fid]
		resp, err := refresh(ctx, rpc2, a.ClientID, a.RefreshToken)
		if err != nil {
			t.Errorf("family %s: the last acknowledged refresh token fails after the restart: %v", fid, err)
			return
		}
		if resp.GetFamilyId() != fid {
			t.Errorf("family %s: refresh answered for family %s", fid, resp.GetFamilyId())
			return
		}
		refreshed.Add(1)
		// Exactly once: the token is spent now.
		if _, err := refresh(ctx, rpc2, a.ClientID, a.RefreshToken); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("family %s: second use of a spent token: %v, want invalid_grant", fid, err)
		}
	})
	forEach(d.Superseded, 4, func(fid string) {
		a := acked[fid]
		if _, err := refresh(ctx, rpc2, a.ClientID, a.RefreshToken); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("family %s: token spent by an unacknowledged rotation: %v, want invalid_grant", fid, err)
			return
		}
		refused.Add(1)
	})
	t.Logf("after the restart: %d last tokens refreshed once, %d refused as superseded", refreshed.Load(), refused.Load())
	// Events delivered again after the kill are not forgeries.
	if n := forgedCount(t, http1Client(), env.baseURL()); n != 0 {
		t.Errorf("the restarted tokend counted %v forged records; tokend alone wrote the log", n)
	}

	if code, took := c2.stop(30 * time.Second); code != 0 {
		t.Errorf("restarted tokend exited with %d after SIGTERM (%s)", code, took)
	} else {
		t.Logf("restarted tokend exited 0 %s after SIGTERM", took.Round(time.Millisecond))
	}
}

// runChains starts families and rotates each a few times, one call at a
// time, recording every acknowledged response. It returns at the first
// failed call: after the kill every call fails, before it none may.
func runChains(ctx context.Context, t *testing.T, rpc tokenv1connect.TokenServiceClient, clientID string, led *ledger, killed *atomic.Bool, unexpected *atomic.Int64) {
	fail := func(what string, err error) {
		if !killed.Load() && ctx.Err() == nil {
			unexpected.Add(1)
			t.Errorf("%s before the kill: %v", what, err)
		}
	}
	for n := 0; ctx.Err() == nil; n++ {
		gen, err := generate(ctx, rpc, &tokenv1.GenerateTokensRequest{
			Subject: fmt.Sprintf("%s-user-%d", clientID, n), ClientId: clientID,
			Audience: []string{"api://e2e"}, Scopes: []string{"read"},
		})
		if err != nil {
			fail("GenerateTokens", err)
			return
		}
		fid, rt := gen.GetFamilyId(), gen.GetRefreshToken()
		led.ack(fid, clientID, rt, 0)
		for r := 1; r <= rotationsPerChain; r++ {
			resp, err := refresh(ctx, rpc, clientID, rt)
			if err != nil {
				fail("RefreshTokens", err)
				return
			}
			if resp.GetFamilyId() != fid {
				t.Errorf("refresh of family %s answered for family %s", fid, resp.GetFamilyId())
				return
			}
			rt = resp.GetRefreshToken()
			led.ack(fid, clientID, rt, r)
		}
	}
}
