package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// TestGracefulShutdown sends SIGTERM to tokend while GenerateTokens calls
// are in flight, over HTTP/1.1 and over h2c (their drains differ). The
// process must exit 0 within SHUTDOWN_TIMEOUT; every call must end as a
// complete, verifiable success or as a clean connection-level refusal
// (never a truncated or internal error); after a restart on the same data
// directory every acknowledged family must be stored, and no stored family
// may lack its response: a drained call answers.
func TestGracefulShutdown(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client func() *http.Client
	}{
		{"http1", http1Client},
		{"h2c", h2cClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runShutdownScenario(t, tc.client)
		})
	}
}

const (
	shutdownTimeout = 5 * time.Second // SHUTDOWN_TIMEOUT of the child
	shutdownWorkers = 6
	loadBeforeTerm  = 500 * time.Millisecond
)

func runShutdownScenario(t *testing.T, newClient func() *http.Client) {
	env := newChildEnv(t, map[string]string{
		"SHUTDOWN_TIMEOUT": fmt.Sprint(int(shutdownTimeout / time.Second)),
		// An fsync per append keeps each call in flight a little longer.
		"NATS_SYNC":     "always",
		"JWT_ALGORITHM": "PS256",
	})
	c := startChild(t, env)
	c.waitReady(env.baseURL(), 60*time.Second)
	keys, _, _ := fetchJWKS(t, http1Client(), env.baseURL())

	rpc := tokenClient(newClient(), env.baseURL())
	led := newLedger()
	var termSent atomic.Bool
	var afterTermOK, afterTermRefused atomic.Int64
	var firstRefusal sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := range shutdownWorkers {
		clientID := fmt.Sprintf("term-client-%d", w)
		wg.Go(func() {
			// Keep calling until the process is gone: calls that arrive
			// during the drain must be served or refused cleanly too.
			for n := 0; c.running() && ctx.Err() == nil; n++ {
				sent := termSent.Load()
				resp, err := generate(ctx, rpc, &tokenv1.GenerateTokensRequest{
					Subject: fmt.Sprintf("%s-user-%d", clientID, n), ClientId: clientID,
					Audience: []string{"api://e2e"}, Scopes: []string{"read", "write"},
				})
				switch {
				case err == nil:
					if msg := checkTokenResponse(keys, resp, clientID); msg != "" {
						t.Errorf("incomplete success response: %s", msg)
						continue
					}
					led.ack(resp.GetFamilyId(), clientID, resp.GetRefreshToken(), 0)
					if sent {
						afterTermOK.Add(1)
					}
				case !termSent.Load():
					t.Errorf("GenerateTokens failed before SIGTERM: %v", err)
					return
				case ctx.Err() == nil && connectionError(err):
					afterTermRefused.Add(1)
					firstRefusal.Do(func() { t.Logf("first refusal after SIGTERM: %v", err) })
					// The listener is closed: pace the retries instead of
					// spinning on refused connections.
					time.Sleep(5 * time.Millisecond)
				default:
					t.Errorf("unclean failure during shutdown: code %v: %v", connect.CodeOf(err), err)
					return
				}
			}
		})
	}
	defer wg.Wait() // also on failure: no worker outlives the test

	// Let the load run, then terminate with calls in flight.
	start := time.Now()
	for time.Since(start) < loadBeforeTerm || led.count() < shutdownWorkers {
		if time.Since(start) > 20*time.Second {
			cancel()
			t.Fatalf("only %d acknowledged responses after 20s", led.count())
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := led.count()
	termSent.Store(true)
	term := time.Now()
	c.signal(syscall.SIGTERM)
	exited := c.wait(shutdownTimeout)
	took := time.Since(term)
	if !exited {
		cancel()
		t.Fatalf("tokend did not exit within SHUTDOWN_TIMEOUT %s of SIGTERM", shutdownTimeout)
	}
	if !c.state.Exited() || c.state.ExitCode() != 0 {
		t.Errorf("tokend exit status %v after SIGTERM, want exit 0", c.state)
	}
	wg.Wait()
	t.Logf("SIGTERM after %d acknowledged responses; exit %d in %s; answered after SIGTERM: %d in flight at the signal, %d sent later; %d refused",
		before, c.state.ExitCode(), took.Round(time.Millisecond), int64(led.count()-before)-afterTermOK.Load(), afterTermOK.Load(), afterTermRefused.Load())

	c2 := startChild(t, env)
	c2.waitReady(env.baseURL(), 60*time.Second)
	d := checkDurability(t, led.snapshot(), readFamilies(t, env.natsURL()))
	t.Logf("acknowledged families %d, all stored; stored without a response: %d", d.Families, d.Orphans)
	if d.Orphans != 0 {
		t.Errorf("%d families were stored but their GenerateTokens response never arrived: the drain dropped answers", d.Orphans)
	}
	if code, took := c2.stop(30 * time.Second); code != 0 {
		t.Errorf("restarted tokend exited with %d after SIGTERM (%s)", code, took)
	}
}

// connectionError reports whether err is a clean refusal at the
// connection level: connect-go's Unavailable (refused dial, EOF before any
// response), or a reset or broken pipe on a keep-alive connection the
// server closed, which connect-go v1.21 reports as Canceled although the
// caller cancelled nothing. Errors the server answers with (Internal,
// Unknown, ...) are not: a call drained during shutdown must not fail
// inside the service.
func connectionError(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable:
		return true
	case connect.CodeCanceled:
		return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	}
	return false
}

// checkTokenResponse returns what is wrong with a GenerateTokens response,
// or "": every field set and the access token verified with go-jose.
func checkTokenResponse(keys jose.JSONWebKeySet, resp *tokenv1.TokenResponse, clientID string) string {
	fid := resp.GetFamilyId()
	switch {
	case fid == "":
		return "no family_id"
	case !strings.HasPrefix(resp.GetRefreshToken(), fid+"."):
		return "refresh token is not <family_id>.<secret>"
	case resp.GetTokenType() != "Bearer" || resp.GetExpiresIn() <= 0 || resp.GetRefreshExpiresIn() <= 0:
		return fmt.Sprintf("token_type %q expires_in %d refresh_expires_in %d", resp.GetTokenType(), resp.GetExpiresIn(), resp.GetRefreshExpiresIn())
	}
	v, err := verifyAccessToken(keys, resp.GetAccessToken(), jose.PS256)
	if err != nil {
		return "access token: " + err.Error()
	}
	if v.Claims.Sid != fid || v.Claims.ClientID != clientID {
		return fmt.Sprintf("access token sid %q client_id %q, want %q %q", v.Claims.Sid, v.Claims.ClientID, fid, clientID)
	}
	return ""
}
