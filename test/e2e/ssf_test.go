package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// ssfPushReceiver records every SET pushed to it; while hold is set it
// answers nothing until the request ends (the transmitter killed).
type ssfPushReceiver struct {
	mu       sync.Mutex
	hold     bool
	attempts []string
	accepted []string
	held     chan struct{} // receives when a push is being held
}

func (r *ssfPushReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	hold := r.hold
	r.attempts = append(r.attempts, string(body))
	r.mu.Unlock()
	if hold {
		select {
		case r.held <- struct{}{}:
		default:
		}
		<-req.Context().Done()
		return
	}
	r.mu.Lock()
	r.accepted = append(r.accepted, string(body))
	r.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

type ssfClaims struct {
	Jti   string `json:"jti"`
	SubID struct {
		Session struct {
			ID string `json:"id"`
		} `json:"session"`
	} `json:"sub_id"`
}

// TestSharedSignalsKill: a tokend SIGKILLed while it pushes a SET (the
// receiver holds the request) loses none: after the restart the push
// receiver gets every revoked session in order, the SET it was sent
// before the kill first, again, with the same jti, and the poll stream
// returns every one. (A replica killed while it makes SETs from a log
// record: rpc/ssf TestMaterializerCrash.)
func TestSharedSignalsKill(t *testing.T) {
	env := newChildEnv(t, nil)
	env.Extra = map[string]string{"PUBLIC_BASE_URL": env.baseURL(), "SSF_PUSH_TIMEOUT": "2"}
	rcv := &ssfPushReceiver{hold: true, held: make(chan struct{}, 1)}
	rsrv := httptest.NewServer(rcv)
	t.Cleanup(rsrv.Close)

	c := startChild(t, env)
	c.waitReady(env.baseURL(), 60*time.Second)
	hc := http1Client()
	call := func(method, path string, body any, v any) {
		t.Helper()
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, env.baseURL()+path, bytes.NewReader(data))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
		}
		if v != nil {
			if err := json.Unmarshal(out, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	var md struct {
		ConfigurationEndpoint string `json:"configuration_endpoint"`
	}
	call(http.MethodGet, "/.well-known/ssf-configuration", nil, &md)
	if md.ConfigurationEndpoint != env.baseURL()+"/ssf/streams" {
		t.Fatalf("metadata: %+v", md)
	}
	// Every SSF series exists from start-up.
	mresp, err := hc.Get(env.baseURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mbody, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, series := range []string{`token_service_ssf_deliveries_total{method="push",outcome="failed"} 0`, "token_service_ssf_pending_sets 0",
		`token_service_ssf_sets_total{event="session_revoked"} 0`, "token_service_ssf_oldest_pending_seconds 0"} {
		if !bytes.Contains(mbody, []byte(series)) {
			t.Fatalf("/metrics lacks %q at start-up", series)
		}
	}
	events := []string{"https://schemas.openid.net/secevent/caep/event-type/session-revoked"}
	var poll struct {
		Delivery struct {
			EndpointURL string `json:"endpoint_url"`
		} `json:"delivery"`
	}
	call(http.MethodPost, "/ssf/streams", map[string]any{"events_requested": events}, &poll)
	call(http.MethodPost, "/ssf/streams", map[string]any{"events_requested": events,
		"delivery": map[string]any{"method": "urn:ietf:rfc:8935", "endpoint_url": rsrv.URL}}, nil)

	ctx := context.Background()
	var want []string
	revoke := func(n int) {
		rpc := tokenClient(h2cClient(), env.baseURL())
		for range n {
			tok, err := generate(ctx, rpc, &tokenv1.GenerateTokensRequest{Subject: "user-kill", ClientId: "web", Audience: []string{"api"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rpc.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: tok.FamilyId}})); err != nil {
				t.Fatal(err)
			}
			want = append(want, tok.FamilyId)
		}
	}
	revoke(10)
	select {
	case <-rcv.held:
	case <-time.After(10 * time.Second):
		t.Fatal("no push before the kill")
	}
	c.signal(syscall.SIGKILL)
	if !c.wait(10 * time.Second) {
		t.Fatal("tokend survived SIGKILL")
	}
	rcv.mu.Lock()
	rcv.hold = false
	first := rcv.attempts[0]
	rcv.mu.Unlock()

	c = startChild(t, env)
	c.waitReady(env.baseURL(), 60*time.Second)
	revoke(10)

	var jwks jose.JSONWebKeySet
	call(http.MethodGet, "/.well-known/jwks.json", nil, &jwks)
	parse := func(raw string) ssfClaims {
		t.Helper()
		tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.PS256, jose.ES384, jose.EdDSA})
		if err != nil {
			t.Fatal(err)
		}
		keys := jwks.Key(tok.Headers[0].KeyID)
		if len(keys) != 1 {
			t.Fatalf("kid %q not in the JWKS", tok.Headers[0].KeyID)
		}
		var cl ssfClaims
		if err := tok.Claims(keys[0].Key, &cl); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	// Push: every session, in order, each jti once accepted; the SET of
	// the push cut by the kill comes again with its jti.
	deadline := time.Now().Add(40 * time.Second)
	var got []string
	for {
		rcv.mu.Lock()
		accepted := append([]string(nil), rcv.accepted...)
		rcv.mu.Unlock()
		got = got[:0]
		seen := map[string]bool{}
		for _, raw := range accepted {
			cl := parse(raw)
			if !seen[cl.Jti] {
				seen[cl.Jti] = true
				got = append(got, cl.SubID.Session.ID)
			}
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			if len(accepted) == 0 || parse(accepted[0]).Jti != parse(first).Jti {
				t.Fatal("the SET pushed before the kill was not the first delivered after it, with the same jti")
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got) != len(want) {
		t.Fatalf("push: %d of %d sessions after the kill", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("push order: %v, want %v", got, want)
		}
	}
	// Poll: every session.
	sessions := map[string]bool{}
	for len(sessions) < len(want) && time.Now().Before(deadline) {
		var resp struct {
			Sets map[string]string `json:"sets"`
		}
		call(http.MethodPost, poll.Delivery.EndpointURL[len(env.baseURL()):], map[string]any{"maxEvents": 50, "returnImmediately": true}, &resp)
		var acks []string
		for jti, raw := range resp.Sets {
			sessions[parse(raw).SubID.Session.ID] = true
			acks = append(acks, jti)
		}
		call(http.MethodPost, poll.Delivery.EndpointURL[len(env.baseURL()):], map[string]any{"ack": acks, "maxEvents": 0}, nil)
		time.Sleep(50 * time.Millisecond)
	}
	for _, fid := range want {
		if !sessions[fid] {
			t.Fatalf("poll: session %s lost (%d of %d)", fid, len(sessions), len(want))
		}
	}
	c.stop(10 * time.Second)
}
