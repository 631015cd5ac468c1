package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	"github.com/auth-platform/tokenservice/eventlog"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/signing"
)

// syncBuffer is a bytes.Buffer the server's goroutines can log into.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startForLogs starts tokend in process with a debug JSON logger writing
// into the returned buffer; extra overrides the environment.
func startForLogs(t *testing.T, extra map[string]string, tp trace.TracerProvider) (*Main, *syncBuffer) {
	t.Helper()
	vars := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		"LOG_LEVEL": "debug", "JWT_ALGORITHM": "ES256", "REFRESH_REUSE_GRACE": "0",
	}
	for k, v := range extra {
		vars[k] = v
	}
	cfg, err := ConfigFromEnv(func(name string) string { return vars[name] })
	if err != nil {
		t.Fatal(err)
	}
	cfg.TracerProvider = tp
	buf := new(syncBuffer)
	logger := slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, cfg, logger)
	if err != nil {
		t.Fatalf("start: %v\nlogs:\n%s", err, buf.String())
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m, buf
}

// secrets collects every credential the test sends or receives.
type secrets []string

func (s *secrets) add(t *testing.T, what string, values ...string) {
	t.Helper()
	for _, v := range values {
		if len(v) < 16 {
			t.Fatalf("%s %q: too short to be a credential, the test is broken", what, v)
		}
		*s = append(*s, v)
	}
}

// addTokens records the access token, the refresh token and its secret
// part (the family ID before the dot is an identifier, not a secret).
func (s *secrets) addTokens(t *testing.T, r *tokenv1.TokenResponse) {
	t.Helper()
	_, secret, ok := strings.Cut(r.GetRefreshToken(), ".")
	if !ok {
		t.Fatalf("refresh token %q is not <family>.<secret>", r.GetRefreshToken())
	}
	s.add(t, "token", r.GetAccessToken(), r.GetRefreshToken(), secret)
}

func withCorrelation[T any](msg *T, id string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("X-Correlation-Id", id)
	return req
}

// TestLogsHoldNoCredentials drives every path that handles a credential
// (issue, refresh, reuse that revokes, every kind of revocation, DPoP
// issue, refresh, mismatch, replay and validation, and a server error)
// with debug logging and tracing on, then checks that no token, refresh
// secret or DPoP proof reached the log or a span, that the server error is
// logged with the trace and correlation IDs of its request, and that the
// event-log and signing spans belong to the RPC's trace and hold no
// subject.
func TestLogsHoldNoCredentials(t *testing.T) {
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	m, logs := startForLogs(t, nil, tp)
	startSpans := len(exporter.GetSpans()) // the key's creation and activation

	const subject = "subject-that-must-stay-out-of-spans"
	client := tokenv1connect.NewTokenServiceClient(&http.Client{Timeout: 30 * time.Second}, "http://"+m.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var sent secrets
	generate := func(req *tokenv1.GenerateTokensRequest) *tokenv1.TokenResponse {
		t.Helper()
		resp, err := client.GenerateTokens(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("GenerateTokens: %v", err)
		}
		sent.addTokens(t, resp.Msg)
		return resp.Msg
	}
	refresh := func(req *tokenv1.RefreshTokensRequest, wantErr bool) *tokenv1.TokenResponse {
		t.Helper()
		resp, err := client.RefreshTokens(ctx, connect.NewRequest(req))
		if (err != nil) != wantErr {
			t.Fatalf("RefreshTokens: got error %v, want error %v", err, wantErr)
		}
		if err != nil {
			return nil
		}
		sent.addTokens(t, resp.Msg)
		return resp.Msg
	}
	revoke := func(req *tokenv1.RevokeTokenRequest) {
		t.Helper()
		if _, err := client.RevokeToken(ctx, connect.NewRequest(req)); err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
	}
	bearer := func() *tokenv1.GenerateTokensRequest {
		return &tokenv1.GenerateTokensRequest{Subject: subject, ClientId: "web", Audience: []string{"api"}, Scopes: []string{"openid"}}
	}

	// Bearer: issue, rotate, reuse the spent token (revokes the family),
	// present a token of another client, then each kind of revocation.
	first := generate(bearer())
	second := refresh(&tokenv1.RefreshTokensRequest{RefreshToken: first.GetRefreshToken(), ClientId: "web"}, false)
	refresh(&tokenv1.RefreshTokensRequest{RefreshToken: first.GetRefreshToken(), ClientId: "web"}, true)
	refresh(&tokenv1.RefreshTokensRequest{RefreshToken: second.GetRefreshToken(), ClientId: "web"}, true) // family revoked
	other := generate(bearer())
	refresh(&tokenv1.RefreshTokensRequest{RefreshToken: other.GetRefreshToken(), ClientId: "another-client"}, true)
	revoke(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_RefreshToken{RefreshToken: other.GetRefreshToken()}})
	byAccess := generate(bearer())
	revoke(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_AccessToken{AccessToken: byAccess.GetAccessToken()}})
	byFamily := generate(bearer())
	revoke(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: byFamily.GetFamilyId()}, Reason: "admin"})
	generate(bearer())

	// DPoP: issue and refresh with proofs of one key, refresh with a proof
	// of another key, replay a proof, validate a proof for a resource.
	const htu = "https://auth.example/token"
	key, thief := dpoptest.NewKey(signing.ES256), dpoptest.NewKey(signing.ES256)
	proof := func(k dpoptest.Key, htm, u string, mods ...func(*dpoptest.Parts)) string {
		p := k.Proof(htm, u, time.Now(), mods...)
		sent.add(t, "DPoP proof", p)
		return p
	}
	issueProof := proof(key, "POST", htu)
	dreq := bearer()
	dreq.DpopProof, dreq.HttpMethod, dreq.HttpUri = issueProof, "POST", htu
	bound := generate(dreq)
	if bound.GetTokenType() != "DPoP" {
		t.Fatalf("token_type %q, want DPoP", bound.GetTokenType())
	}
	rotated := refresh(&tokenv1.RefreshTokensRequest{RefreshToken: bound.GetRefreshToken(), ClientId: "web",
		DpopProof: proof(key, "POST", htu), HttpMethod: "POST", HttpUri: htu}, false)
	refresh(&tokenv1.RefreshTokensRequest{RefreshToken: rotated.GetRefreshToken(), ClientId: "web",
		DpopProof: proof(thief, "POST", htu), HttpMethod: "POST", HttpUri: htu}, true)
	dreq.DpopProof = issueProof // replayed
	if _, err := client.GenerateTokens(ctx, connect.NewRequest(dreq)); err == nil {
		t.Fatal("a replayed DPoP proof was accepted")
	}
	const resource = "https://api.example/things"
	vresp, err := client.ValidateDPoP(ctx, connect.NewRequest(&tokenv1.ValidateDPoPRequest{
		Proof:      proof(key, "GET", resource, func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH(rotated.GetAccessToken()) }),
		HttpMethod: "GET", HttpUri: resource, AccessToken: rotated.GetAccessToken(),
	}))
	if err != nil || !vresp.Msg.GetValid() {
		t.Fatalf("ValidateDPoP: %v %v", vresp, err)
	}
	vresp, err = client.ValidateDPoP(ctx, connect.NewRequest(&tokenv1.ValidateDPoPRequest{
		Proof:      proof(thief, "GET", resource, func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH(rotated.GetAccessToken()) }),
		HttpMethod: "GET", HttpUri: resource, AccessToken: rotated.GetAccessToken(),
	}))
	if err != nil || vresp.Msg.GetValid() {
		t.Fatalf("ValidateDPoP with another key: %v %v, want a refusal", vresp, err)
	}
	// The subject's cut-off last: the tokens above were issued in its
	// second or before, which counts as revoked (family.Revokes).
	revoke(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_Subject{Subject: subject}, Reason: "subject"})

	// A server error: the event log is gone under the service.
	m.nc.Close()
	const serverErrorID = "logs-test-server-error"
	sreq := bearer()
	sreq.DpopProof, sreq.HttpMethod, sreq.HttpUri = proof(key, "POST", htu), "POST", htu
	_, err = client.GenerateTokens(ctx, withCorrelation(sreq, serverErrorID))
	if connect.CodeOf(err) != connect.CodeInternal && connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("GenerateTokens without NATS: %v, want a server error", err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Logf("close: %v", err)
	}

	// No credential in the log, nor in any span.
	text := logs.String()
	spans := exporter.GetSpans()
	for _, s := range sent {
		if strings.Contains(text, s) {
			t.Errorf("a credential reached the log: %.24s…", s)
		}
		for _, sp := range spans {
			if spanMentions(sp, s) {
				t.Errorf("a credential reached span %s: %.24s…", sp.Name, s)
			}
		}
	}
	for _, sp := range spans {
		if spanMentions(sp, subject) {
			t.Errorf("the subject reached span %s", sp.Name)
		}
	}

	// The server error is logged with its request's IDs.
	var logged bool
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Text())
		}
		if rec["correlation_id"] != serverErrorID {
			continue
		}
		logged = true
		tid, _ := rec["trace_id"].(string)
		if !rpcTraced(spans, tid, "GenerateTokens") {
			t.Errorf("server error logged with trace_id %q, not the trace of a GenerateTokens call: %s", tid, sc.Text())
		}
		if n := strings.Count(sc.Text(), `"correlation_id"`); n != 1 {
			t.Errorf("correlation_id appears %d times: %s", n, sc.Text())
		}
	}
	if !logged {
		t.Errorf("no log line carries correlation_id %s; logs:\n%s", serverErrorID, text)
	}

	// Appends and signing are children of the RPC that caused them.
	for _, name := range []string{"eventlog.Append", "issuer.SignAccessToken"} {
		var n int
		for _, sp := range spans[startSpans:] {
			if sp.Name != name {
				continue
			}
			n++
			if !rpcTraced(spans, sp.SpanContext.TraceID().String(), "") {
				t.Errorf("span %s is not in the trace of an RPC", name)
			}
		}
		if n == 0 {
			t.Errorf("no %s span", name)
		}
	}
}

// spanMentions reports whether s occurs in a name, attribute or event of
// the span.
func spanMentions(sp tracetest.SpanStub, s string) bool {
	check := func(kvs []attribute.KeyValue) bool {
		for _, kv := range kvs {
			if strings.Contains(kv.Value.String(), s) {
				return true
			}
		}
		return false
	}
	if strings.Contains(sp.Name, s) || strings.Contains(sp.Status.Description, s) || check(sp.Attributes) {
		return true
	}
	for _, ev := range sp.Events {
		if strings.Contains(ev.Name, s) || check(ev.Attributes) {
			return true
		}
	}
	return false
}

// rpcTraced reports whether traceID is the trace of a server span of the
// TokenService (of method, if set).
func rpcTraced(spans tracetest.SpanStubs, traceID, method string) bool {
	for _, sp := range spans {
		if sp.SpanKind == trace.SpanKindServer && sp.SpanContext.TraceID().String() == traceID &&
			strings.HasPrefix(sp.Name, tokenv1connect.TokenServiceName+"/"+method) {
			return true
		}
	}
	return false
}

// TestOTLPExport: with OTEL_EXPORTER_OTLP_ENDPOINT set, the spans of a call
// reach the collector's /v1/traces by the time Close returns.
func TestOTLPExport(t *testing.T) {
	var posts atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" && len(body) > 0 {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	m, _ := startForLogs(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL, "OTEL_TRACES_SAMPLER_ARG": "1"}, nil)
	client := tokenv1connect.NewTokenServiceClient(&http.Client{Timeout: 30 * time.Second}, "http://"+m.Addr())
	if _, err := client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{
		Subject: "alice", ClientId: "web", Audience: []string{"api"},
	})); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if posts.Load() == 0 {
		t.Fatal("no spans were exported to OTEL_EXPORTER_OTLP_ENDPOINT")
	}
}

// TestTracingOffByDefault: without an endpoint nothing is traced, so RPCs
// run without a span context.
func TestTracingOffByDefault(t *testing.T) {
	c, err := ConfigFromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if c.OTLPEndpoint != "" || c.ServiceName != "tokend" {
		t.Fatalf("OTLPEndpoint %q ServiceName %q, want off and tokend", c.OTLPEndpoint, c.ServiceName)
	}
	tp, stop, err := newTracerProvider(context.Background(), c)
	if tp != nil || stop != nil || err != nil {
		t.Fatalf("newTracerProvider without an endpoint: %v %v %v, want nothing", tp, stop != nil, err)
	}
	for _, bad := range []string{"collector:4318", "ftp://collector", "http://"} {
		_, err := ConfigFromEnv(func(name string) string {
			if name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
				return bad
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_ENDPOINT") {
			t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT=%q: %v, want an error naming it", bad, err)
		}
	}
}

// TestWithRequestIDs checks the attributes the handler adds, with and
// without a request context, through WithAttrs, and that it adds no
// second correlation_id.
func TestWithRequestIDs(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("0123456789abcdef0123456789abcdef")
	sid, _ := trace.SpanIDFromHex("0123456789abcdef")
	traced := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	traced = eventlog.WithCorrelationID(traced, "corr-1")
	tests := []struct {
		name string
		log  func(*slog.Logger)
		want map[string]any // nil value: must be absent
	}{
		{"no context", func(l *slog.Logger) { l.Info("x") },
			map[string]any{"trace_id": nil, "correlation_id": nil}},
		{"request context", func(l *slog.Logger) { l.InfoContext(traced, "x") },
			map[string]any{"trace_id": tid.String(), "span_id": sid.String(), "correlation_id": "corr-1"}},
		{"with attrs", func(l *slog.Logger) { l.With("k", "v").InfoContext(traced, "x") },
			map[string]any{"k": "v", "trace_id": tid.String(), "correlation_id": "corr-1"}},
		{"correlation only", func(l *slog.Logger) {
			l.InfoContext(eventlog.WithCorrelationID(context.Background(), "corr-2"), "x")
		}, map[string]any{"trace_id": nil, "correlation_id": "corr-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := slog.New(WithRequestIDs(WithRequestIDs(slog.NewJSONHandler(&buf, nil))))
			tt.log(l)
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(buf.String(), `"trace_id"`); n > 1 {
				t.Errorf("trace_id appears %d times: %s", n, buf.String())
			}
			for k, want := range tt.want {
				if got, ok := rec[k]; want == nil && ok || want != nil && got != want {
					t.Errorf("%s = %v, want %v in %s", k, got, want, buf.String())
				}
			}
		})
	}
	var buf bytes.Buffer
	slog.New(WithRequestIDs(slog.NewJSONHandler(&buf, nil))).ErrorContext(traced, "request failed", "correlation_id", "corr-1")
	if n := strings.Count(buf.String(), `"correlation_id"`); n != 1 {
		t.Fatalf("correlation_id appears %d times: %s", n, buf.String())
	}
}
