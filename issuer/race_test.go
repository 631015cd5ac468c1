package issuer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// TestConcurrentRefresh refreshes one token from N goroutines at once,
// through one issuer and through N issuers on separate connections (on a
// single node and on an R3 stream of a 3-node cluster). Exactly one new
// pair comes out; every other caller is refused, or inside the grace window
// gets that same pair.
//
// Without a grace window the log cannot tell a caller that read the state
// after the winner's rotation from a replay: such a caller revokes the
// family (strict rotation, RFC 9700 §4.14.2), which is why the grace window
// exists. A caller that read the token as current and then lost the
// compare-and-set is refused without revoking. With the grace window the
// successor is handed out once more, at most: to a caller that lost the
// compare-and-set (the others are refused without revoking), or to the
// first caller that read the state after the rotation; a second caller of
// that kind presents a spent token whose successor is gone, a replay that
// revokes the family.
func TestConcurrentRefresh(t *testing.T) {
	const n = 12
	for _, topo := range []string{"single", "cluster"} {
		t.Run(topo, func(t *testing.T) {
			if topo == "cluster" && testing.Short() {
				t.Skip("cluster in -short")
			}
			var envs func(grace time.Duration) []*issuertest.Env
			if topo == "single" {
				node := eventlogtest.SingleNode(t)
				envs = func(grace time.Duration) []*issuertest.Env {
					// One issuer on the node's connection, and more on
					// connections of their own.
					clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
					out := []*issuertest.Env{issuertest.New(t, issuertest.Options{Conn: node.Conn, Grace: grace, Clock: clock})}
					for range 3 {
						nc, err := node.Embedded.Connect()
						if err != nil {
							t.Fatal(err)
						}
						t.Cleanup(nc.Close)
						out = append(out, issuertest.New(t, issuertest.Options{Conn: nc, Grace: grace, Clock: clock}))
					}
					return out
				}
			} else {
				nodes := eventlogtest.Cluster(t, 3)
				envs = func(grace time.Duration) []*issuertest.Env {
					clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
					var out []*issuertest.Env
					for _, nd := range nodes {
						out = append(out, issuertest.New(t, issuertest.Options{Conn: nd.Conn, Replicas: 3, Grace: grace, Clock: clock}))
					}
					return out
				}
			}
			for _, tc := range []struct {
				name  string
				grace time.Duration
			}{{"no grace", 0}, {"grace", 10 * time.Second}} {
				t.Run(tc.name, func(t *testing.T) {
					es := envs(tc.grace)
					raceOnce(t, es, n, tc.grace > 0)
				})
			}
		})
	}
}

func raceOnce(t *testing.T, envs []*issuertest.Env, n int, grace bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, err := envs[0].Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "racer", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	results := make([]issuer.Tokens, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Goroutines share issuers round robin: some race inside one
			// process, some across connections.
			results[i], errs[i] = envs[i%len(envs)].Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: first.RefreshToken, ClientID: "web"})
		}()
	}
	close(start)
	wg.Wait()
	pairs := map[string]int{}
	refused, replays := 0, 0
	for i := range n {
		switch {
		case errs[i] == nil:
			pairs[results[i].RefreshToken]++
		case errors.Is(errs[i], issuer.ErrTokenRotated):
			refused++
		case errors.Is(errs[i], issuer.ErrTokenReused) || errors.Is(errs[i], issuer.ErrFamilyRevoked):
			replays++ // read the state after the rotation (and, with grace, after the successor was handed out): a replay
		default:
			t.Fatalf("caller %d: unexpected error %v", i, errs[i])
		}
	}
	if len(pairs) != 1 {
		t.Fatalf("%d distinct new pairs came out, want exactly 1 (%d refused)", len(pairs), refused)
	}
	for _, got := range pairs {
		if want := map[bool]int{false: 1, true: 2}[grace]; got > want {
			t.Fatalf("the new pair went to %d callers, want at most %d (the winner, and one grace successor)", got, want)
		}
	}
	if !grace && refused+replays != n-1 {
		t.Fatalf("without grace %d callers were refused, want %d", refused+replays, n-1)
	}
	rec, err := envs[0].Log.LastConsistent(ctx, envs[0].Log.Subjects().FamilyFilter(first.FamilyID))
	if err != nil {
		t.Fatal(err)
	}
	st := stateOf(t, rec)
	wantStatus := eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE
	if replays > 0 {
		wantStatus = eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED
	}
	if st.GetGeneration() != 2 || st.GetStatus() != wantStatus {
		t.Fatalf("family after the race: generation %d status %v, want 2 %v", st.GetGeneration(), st.GetStatus(), wantStatus)
	}
	if replays > 0 {
		t.Logf("%d callers: 1 pair, %d lost the race, %d came after it and revoked the family as a replay", n, refused, replays)
		return
	}
	// The one new token is the live one.
	var winner string
	for tok := range pairs {
		winner = tok
	}
	if _, err := envs[len(envs)-1].Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: winner, ClientID: "web"}); err != nil {
		t.Fatalf("the winning token does not refresh: %v", err)
	}
	t.Logf("%d callers: 1 pair (%d got it), %d refused", n, pairs[winner], refused)
}
