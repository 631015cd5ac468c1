package rpc_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	"github.com/auth-platform/tokenservice/issuer"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/signing"
)

// TestGuard: with a Guard, every refusal (by the middleware or by the
// interceptor) carries the correlation ID once, is counted in
// token_service_auth_refused_total, and an allowed caller is the actor of
// the events it causes.
func TestGuard(t *testing.T) {
	dir := t.TempDir()
	issuerKey, issuerEntry, err := auth.GenerateAPIKey(rand.Reader, "login", auth.RoleIssuer)
	if err != nil {
		t.Fatal(err)
	}
	rsKey, rsEntry, err := auth.GenerateAPIKey(rand.Reader, "api", auth.RoleResourceServer)
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte("api_keys:\n  "+issuerEntry.Line()+"\n  "+rsEntry.Line()+"\n"+auth.EndMarker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	pol, err := auth.LoadPolicy(policyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	var metrics *rpc.Metrics
	s := newServerWith(t, false, func(c *rpc.Config) {
		metrics = c.Metrics
		g, err := auth.New(auth.Config{Policy: pol, Observer: c.Metrics, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		c.Guard = g
	})
	ctx := context.Background()
	refused := seriesKey("token_service_auth_refused_total", "procedure", procGenerate, "reason", "unauthenticated")
	denied := seriesKey("token_service_auth_refused_total", "procedure", procGenerate, "reason", "permission_denied")
	adminKey := seriesKey("token_service_auth_refused_total", "procedure", "/metrics", "reason", "unauthenticated")
	scrape := func() metricSnapshot {
		t.Helper()
		// /metrics is for admins: read the registry directly.
		rec := httptest.NewRecorder()
		metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		return parseSnapshot(t, rec.Body)
	}
	before := scrape()
	for _, k := range []string{refused, denied, adminKey} {
		if _, ok := before[k]; !ok {
			t.Fatalf("%s not exposed at start", k)
		}
	}
	gen := &tokenv1.GenerateTokensRequest{Subject: "dave", ClientId: "web", Audience: []string{"api"}}
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
		key  string
		want connect.Code
	}{
		{"connect, no credential (middleware)", nil, "", connect.CodeUnauthenticated},
		{"grpc, no credential (middleware)", []connect.ClientOption{connect.WithGRPC()}, "", connect.CodeUnauthenticated},
		{"grpc-web, wrong role (middleware)", []connect.ClientOption{connect.WithGRPCWeb()}, rsKey, connect.CodePermissionDenied},
		{"connect, wrong role (middleware)", nil, rsKey, connect.CodePermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := tokenv1connect.NewTokenServiceClient(s.http, s.url, tc.opts...)
			for _, sent := range []string{"guard-corr-1", ""} {
				req := connect.NewRequest(gen)
				if sent != "" {
					req.Header().Set(rpc.HeaderCorrelationID, sent)
				}
				if tc.key != "" {
					req.Header().Set("Authorization", "Bearer "+tc.key)
				}
				_, err := client.GenerateTokens(ctx, req)
				var ce *connect.Error
				if !errors.As(err, &ce) || ce.Code() != tc.want {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				ids := ce.Meta().Values(rpc.HeaderCorrelationID)
				if len(ids) != 1 || ids[0] == "" || (sent != "" && ids[0] != sent) {
					t.Fatalf("correlation IDs %q, want one (%q)", ids, sent)
				}
			}
		})
	}
	req := connect.NewRequest(gen)
	req.Header().Set("Authorization", "Bearer "+issuerKey)
	req.Header().Set(rpc.HeaderCorrelationID, "guard-ok")
	resp, err := s.client.GenerateTokens(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if ids := resp.Header().Values(rpc.HeaderCorrelationID); len(ids) != 1 || ids[0] != "guard-ok" {
		t.Fatalf("correlation IDs of a success %q", ids)
	}
	rec, err := s.env.Log.LastConsistent(ctx, s.env.Log.Subjects().FamilyFilter(resp.Msg.GetFamilyId()))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Actor != "apikey:login" || rec.CorrelationID != "guard-ok" {
		t.Fatalf("event actor %q correlation %q", rec.Actor, rec.CorrelationID)
	}
	hr, err := s.http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != http.StatusUnauthorized || len(hr.Header.Values(rpc.HeaderCorrelationID)) != 1 {
		t.Fatalf("/metrics without credential: %s, correlation %q", hr.Status, hr.Header.Values(rpc.HeaderCorrelationID))
	}
	after := scrape()
	assertOnlyMoved(t, "refusals", before, after, map[string]float64{
		refused:  4,
		denied:   4,
		adminKey: 1,
		seriesKey("token_service_tokens_issued_total", "token_type", "Bearer", "algorithm", "ES256"): 1,
		latencyCount(procGenerate): 1,
	})
}

// TestWatchEndsWhenCallerWithdrawn: a WatchRevocations stream ends as
// soon as its caller is no longer admitted: its key removed from the
// policy (unauthenticated), its role taken away (permission_denied), or
// its key expired (unauthenticated); the stream of a caller the policy
// still admits goes on and receives revocations.
func TestWatchEndsWhenCallerWithdrawn(t *testing.T) {
	dir := t.TempDir()
	keys := map[string]string{}
	entries := map[string]auth.APIKeyEntry{}
	for _, name := range []string{"kept", "removed", "demoted", "expiring"} {
		key, e, err := auth.GenerateAPIKey(rand.Reader, name, auth.RoleResourceServer)
		if err != nil {
			t.Fatal(err)
		}
		keys[name], entries[name] = key, e
	}
	expiring := entries["expiring"]
	expiring.Expires = time.Now().Add(3 * time.Second).UTC().Format(time.RFC3339Nano)
	entries["expiring"] = expiring
	policyFile := filepath.Join(dir, "policy.yaml")
	write := func(names ...string) {
		t.Helper()
		var b strings.Builder
		b.WriteString("api_keys:\n")
		for _, n := range names {
			e := entries[n]
			if n == "demoted" && len(names) < 4 {
				e.Roles = []auth.Role{auth.RoleIssuer}
			}
			b.WriteString("  " + e.Line() + "\n")
		}
		b.WriteString(auth.EndMarker + "\n")
		if err := os.WriteFile(policyFile, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("kept", "removed", "demoted", "expiring")
	log := slog.New(slog.DiscardHandler)
	pol, err := auth.LoadPolicy(policyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	s := newServerWith(t, false, func(c *rpc.Config) {
		g, err := auth.New(auth.Config{Policy: pol, Observer: c.Metrics, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		c.Guard = g
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type watch struct {
		revocations chan *tokenv1.Revocation
		ended       chan error
	}
	open := func(name string) watch {
		t.Helper()
		req := connect.NewRequest(&tokenv1.WatchRevocationsRequest{})
		req.Header().Set("Authorization", "Bearer "+keys[name])
		stream, err := s.client.WatchRevocations(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		w := watch{revocations: make(chan *tokenv1.Revocation, 16), ended: make(chan error, 1)}
		subscribed := make(chan struct{})
		go func() {
			defer stream.Close()
			first := true
			for stream.Receive() {
				if stream.Msg().GetHeartbeat() != nil {
					if first {
						first = false
						close(subscribed)
					}
					continue
				}
				w.revocations <- stream.Msg().GetRevocation()
			}
			w.ended <- stream.Err()
		}()
		select {
		case <-subscribed:
		case err := <-w.ended:
			t.Fatalf("%s: stream ended before it was subscribed: %v", name, err)
		case <-ctx.Done():
			t.Fatalf("%s: no heartbeat", name)
		}
		return w
	}
	watches := map[string]watch{}
	for _, name := range []string{"kept", "removed", "demoted", "expiring"} {
		watches[name] = open(name)
	}
	ends := func(name string, want connect.Code) {
		t.Helper()
		select {
		case err := <-watches[name].ended:
			if connect.CodeOf(err) != want {
				t.Fatalf("%s: stream ended with %v, want %v", name, err, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: stream still open", name)
		}
	}
	write("kept", "demoted", "expiring")
	if err := pol.Reload(); err != nil {
		t.Fatal(err)
	}
	ends("removed", connect.CodeUnauthenticated)
	ends("demoted", connect.CodePermissionDenied)
	ends("expiring", connect.CodeUnauthenticated)
	// The caller the policy still admits keeps its stream.
	select {
	case err := <-watches["kept"].ended:
		t.Fatalf("kept: stream ended: %v", err)
	default:
	}
	gen, err := s.env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "erin", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.env.Issuer.RevokeFamily(ctx, gen.FamilyID, eventsv1.RevocationReason_REVOCATION_REASON_CLIENT); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-watches["kept"].revocations:
		if r.GetFamilyId() != gen.FamilyID {
			t.Fatalf("kept: revocation of %s, want %s", r.GetFamilyId(), gen.FamilyID)
		}
	case err := <-watches["kept"].ended:
		t.Fatalf("kept: stream ended: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("kept: no revocation")
	}
}

// TestExtraClaimsFromPolicy: GenerateTokens sets an authorization claim
// (roles) through extra_claims only for a caller whose policy entry lists
// it under extra_claims; another issuer is refused with invalid_request.
func TestExtraClaimsFromPolicy(t *testing.T) {
	dir := t.TempDir()
	grantedKey, granted, err := auth.GenerateAPIKey(rand.Reader, "granted", auth.RoleIssuer)
	if err != nil {
		t.Fatal(err)
	}
	granted.ExtraClaims = []string{"roles"}
	plainKey, plain, err := auth.GenerateAPIKey(rand.Reader, "plain", auth.RoleIssuer)
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte("api_keys:\n  "+granted.Line()+"\n  "+plain.Line()+"\n"+auth.EndMarker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	pol, err := auth.LoadPolicy(policyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	s := newServerWith(t, false, func(c *rpc.Config) {
		g, err := auth.New(auth.Config{Policy: pol, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		c.Guard = g
	})
	roles, err := structpb.NewStruct(map[string]any{"roles": []any{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	generate := func(key string) error {
		req := connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "frank", ClientId: "web", Audience: []string{"api"}, ExtraClaims: roles})
		req.Header().Set("Authorization", "Bearer "+key)
		_, err := s.client.GenerateTokens(context.Background(), req)
		return err
	}
	if err := generate(grantedKey); err != nil {
		t.Fatalf("a caller allowed roles: %v", err)
	}
	err = generate(plainKey)
	if code, oauth := oauthCode(t, err); code != connect.CodeInvalidArgument || oauth != "invalid_request" {
		t.Fatalf("a caller not allowed roles: %v", err)
	}
}

// TestAudiences: a resource server restricted to some audiences in the
// policy, or naming the audience it serves, introspects a token for
// another audience as {"active":false} and has ValidateDPoP refuse it as
// invalid_token (RFC 7662 §4); tokens for its audience are answered in
// full.
func TestAudiences(t *testing.T) {
	dir := t.TempDir()
	ordersKey, orders, err := auth.GenerateAPIKey(rand.Reader, "orders", auth.RoleResourceServer)
	if err != nil {
		t.Fatal(err)
	}
	orders.Audiences = []string{"orders"}
	anyKey, anyRS, err := auth.GenerateAPIKey(rand.Reader, "any", auth.RoleResourceServer)
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte("api_keys:\n  "+orders.Line()+"\n  "+anyRS.Line()+"\n"+auth.EndMarker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	pol, err := auth.LoadPolicy(policyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	s := newServerWith(t, false, func(c *rpc.Config) {
		g, err := auth.New(auth.Config{Policy: pol, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		c.Guard = g
	})
	ctx := context.Background()
	gen := func(aud string) issuer.Tokens {
		tok, err := s.env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "hana", ClientID: "web", Audience: []string{aud}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	forOrders, forBilling := gen("orders"), gen("billing")
	introspect := func(key, tok, aud string) *tokenv1.IntrospectTokenResponse {
		t.Helper()
		req := connect.NewRequest(&tokenv1.IntrospectTokenRequest{Token: tok, Audience: aud})
		req.Header().Set("Authorization", "Bearer "+key)
		resp, err := s.client.IntrospectToken(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	for _, tc := range []struct {
		name       string
		key, token string
		audience   string
		active     bool
	}{
		{"restricted, its audience", ordersKey, forOrders.AccessToken, "", true},
		{"restricted, its audience named", ordersKey, forOrders.AccessToken, "orders", true},
		{"restricted, another audience", ordersKey, forBilling.AccessToken, "", false},
		{"restricted, another audience named", ordersKey, forBilling.AccessToken, "billing", false},
		{"restricted, refresh token of another audience", ordersKey, forBilling.RefreshToken, "", false},
		{"restricted, refresh token of its audience", ordersKey, forOrders.RefreshToken, "", true},
		{"unrestricted", anyKey, forBilling.AccessToken, "", true},
		{"unrestricted, names the token's audience", anyKey, forBilling.AccessToken, "billing", true},
		{"unrestricted, names another audience", anyKey, forBilling.AccessToken, "orders", false},
		{"unrestricted, refresh token, names another audience", anyKey, forBilling.RefreshToken, "orders", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := introspect(tc.key, tc.token, tc.audience)
			if r.GetActive() != tc.active {
				t.Fatalf("active %v, want %v", r.GetActive(), tc.active)
			}
			if !tc.active && (r.GetSub() != "" || len(r.GetAud()) != 0 || r.GetClientId() != "") {
				t.Fatalf("an inactive answer discloses %v", r)
			}
		})
	}
	k := dpoptest.NewKey(signing.ES256)
	const rs = "https://orders.example.com/v1"
	validate := func(key, tok, aud string) *tokenv1.ValidateDPoPResponse {
		t.Helper()
		proof := k.Proof("GET", rs, s.env.Clock.Now(), func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH(tok) })
		req := connect.NewRequest(&tokenv1.ValidateDPoPRequest{Proof: proof, HttpMethod: "GET", HttpUri: rs, AccessToken: tok, Audience: aud})
		req.Header().Set("Authorization", "Bearer "+key)
		resp, err := s.client.ValidateDPoP(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	if r := validate(ordersKey, forOrders.AccessToken, "orders"); !r.GetValid() {
		t.Fatalf("ValidateDPoP of a token for the caller's audience: %s %s", r.GetError(), r.GetErrorDescription())
	}
	if r := validate(ordersKey, forBilling.AccessToken, ""); r.GetValid() || r.GetError() != "invalid_token" {
		t.Fatalf("ValidateDPoP of a token for another audience (restricted caller): valid %v %q", r.GetValid(), r.GetError())
	}
	if r := validate(anyKey, forBilling.AccessToken, "orders"); r.GetValid() || r.GetError() != "invalid_token" {
		t.Fatalf("ValidateDPoP of a token for another audience (named): valid %v %q", r.GetValid(), r.GetError())
	}
}
