package rpc_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/signing"
)

// metricSnapshot is one scrape of /metrics: the value of every series,
// keyed by seriesKey. Histograms and summaries appear as their _count and
// _sum series.
type metricSnapshot map[string]float64

// seriesKey returns name{l1="v1",l2="v2"} with the labels sorted by name;
// labels are name, value pairs.
func seriesKey(name string, labels ...string) string {
	if len(labels)%2 != 0 {
		panic("seriesKey: odd label list")
	}
	pairs := make([]string, 0, len(labels)/2)
	for i := 0; i < len(labels); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// scrapeSnapshot GETs base/metrics and parses it with the text parser.
func scrapeSnapshot(t *testing.T, c *http.Client, base string) metricSnapshot {
	t.Helper()
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	return parseSnapshot(t, resp.Body)
}

// parseSnapshot parses the text exposition format.
func parseSnapshot(t *testing.T, r io.Reader) metricSnapshot {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	snap := metricSnapshot{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName(), l.GetValue())
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				snap[seriesKey(name, labels...)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				snap[seriesKey(name, labels...)] = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				snap[seriesKey(name, labels...)] = m.GetUntyped().GetValue()
			case dto.MetricType_HISTOGRAM:
				snap[seriesKey(name+"_count", labels...)] = float64(m.GetHistogram().GetSampleCount())
				snap[seriesKey(name+"_sum", labels...)] = m.GetHistogram().GetSampleSum()
			case dto.MetricType_SUMMARY:
				snap[seriesKey(name+"_count", labels...)] = float64(m.GetSummary().GetSampleCount())
				snap[seriesKey(name+"_sum", labels...)] = m.GetSummary().GetSampleSum()
			}
		}
	}
	return snap
}

// assertOnlyMoved checks that between before and after every series in
// want moved by exactly its amount and every other token_service_ series
// (but the _sum of histograms, which moves by a duration, and the cache
// operations, which the families projector counts when it gets to an
// event) did not move.
func assertOnlyMoved(t *testing.T, step string, before, after metricSnapshot, want map[string]float64) {
	t.Helper()
	for k := range want {
		if _, ok := after[k]; !ok {
			t.Errorf("%s: series %s is not exposed", step, k)
		}
	}
	for k, v := range after {
		if !strings.HasPrefix(k, "token_service_") || strings.HasPrefix(k, "token_service_projection_lag_records") ||
			strings.HasPrefix(k, "token_service_cache_operations_total") {
			continue
		}
		if name, _, _ := strings.Cut(k, "{"); strings.HasSuffix(name, "_sum") {
			continue
		}
		if d := v - before[k]; d != want[k] {
			t.Errorf("%s: %s moved by %v, want %v", step, k, d, want[k])
		}
	}
}

const (
	procGenerate = "/token.v1.TokenService/GenerateTokens"
	procRefresh  = "/token.v1.TokenService/RefreshTokens"
	procRevoke   = "/token.v1.TokenService/RevokeToken"
)

func latencyCount(proc string) string {
	return seriesKey("token_service_grpc_latency_seconds_count", "method", proc)
}

// TestMetricsMove: each metric moves when its event happens, by exactly
// the expected amount, and no other token_service_ series moves with it.
// The issuer test env's log has no append observer, so the event log
// metrics are checked against the whole app in TestEventLogMetricsMove.
func TestMetricsMove(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	var before metricSnapshot
	begin := func() { before = scrapeSnapshot(t, s.http, s.url) }
	check := func(step string, want map[string]float64) {
		t.Helper()
		assertOnlyMoved(t, step, before, scrapeSnapshot(t, s.http, s.url), want)
	}
	bearer := &tokenv1.GenerateTokensRequest{Subject: "erin", ClientId: "web", Audience: []string{"api"}, Scopes: []string{"read"}}

	begin()
	tok, err := s.client.GenerateTokens(ctx, connect.NewRequest(bearer))
	if err != nil {
		t.Fatal(err)
	}
	check("GenerateTokens (Bearer)", map[string]float64{
		seriesKey("token_service_tokens_issued_total", "token_type", "Bearer", "algorithm", "ES256"): 1,
		latencyCount(procGenerate): 1,
	})

	k := dpoptest.NewKey(signing.ES256)
	begin()
	bound := s.generateBound(t, k)
	check("GenerateTokens (DPoP)", map[string]float64{
		seriesKey("token_service_tokens_issued_total", "token_type", "DPoP", "algorithm", "ES256"): 1,
		seriesKey("token_service_dpop_validations_total", "status", "valid", "error_type", "none"): 1,
		latencyCount(procGenerate): 1,
	})

	begin()
	_, err = s.client.GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{
		Subject: "erin", ClientId: "spa", Audience: []string{"api"},
		DpopProof: k.Proof("GET", tokenURL, s.env.Clock.Now()), HttpMethod: "POST", HttpUri: tokenURL,
	}))
	if _, code := oauthCode(t, err); code != "invalid_dpop_proof" {
		t.Fatalf("proof with the wrong htm: %s", code)
	}
	check("GenerateTokens (DPoP proof with the wrong htm)", map[string]float64{
		seriesKey("token_service_dpop_validations_total", "status", "invalid", "error_type", "htm"): 1,
		latencyCount(procGenerate): 1,
	})

	begin()
	if _, err := s.refresh(dpoptest.NewKey(signing.ES256), bound.GetRefreshToken()); err == nil {
		t.Fatal("refresh with another DPoP key succeeded")
	}
	check("RefreshTokens (DPoP proof of another key)", map[string]float64{
		seriesKey("token_service_dpop_validations_total", "status", "valid", "error_type", "none"): 1,
		seriesKey("token_service_security_events_total", "event_type", "dpop_key_mismatch"):        1,
		seriesKey("token_service_tokens_refreshed_total", "status", "invalid"):                     1,
		latencyCount(procRefresh): 1,
	})

	refresh := func(token string) error {
		_, err := s.client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: token, ClientId: "web"}))
		return err
	}
	begin()
	if err := refresh(tok.Msg.GetRefreshToken()); err != nil {
		t.Fatal(err)
	}
	check("RefreshTokens (success)", map[string]float64{
		seriesKey("token_service_tokens_refreshed_total", "status", "success"):                       1,
		seriesKey("token_service_tokens_issued_total", "token_type", "Bearer", "algorithm", "ES256"): 1,
		latencyCount(procRefresh): 1,
	})

	// The test env has no grace window: the spent token again is reuse.
	begin()
	if _, code := oauthCode(t, refresh(tok.Msg.GetRefreshToken())); code != "invalid_grant" {
		t.Fatalf("reuse: %s", code)
	}
	check("RefreshTokens (reuse)", map[string]float64{
		seriesKey("token_service_tokens_refreshed_total", "status", "reuse"):                  1,
		seriesKey("token_service_security_events_total", "event_type", "refresh_token_reuse"): 1,
		seriesKey("token_service_tokens_revoked_total", "reason", "reuse"):                    1,
		seriesKey("token_service_security_events_total", "event_type", "revocation"):          1,
		latencyCount(procRefresh): 1,
	})

	begin()
	res, err := s.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{
		Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: bound.GetFamilyId()}}))
	if err != nil || res.Msg.GetRevokedFamilies() != 1 {
		t.Fatalf("revoke family: %v %v", res, err)
	}
	check("RevokeToken (family)", map[string]float64{
		seriesKey("token_service_tokens_revoked_total", "reason", "client"):          1,
		seriesKey("token_service_security_events_total", "event_type", "revocation"): 1,
		latencyCount(procRevoke): 1,
	})

	other, err := s.client.GenerateTokens(ctx, connect.NewRequest(bearer))
	if err != nil {
		t.Fatal(err)
	}
	begin()
	res, err = s.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{
		Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: other.Msg.GetFamilyId()}, Reason: "logout"}))
	if err != nil || res.Msg.GetRevokedFamilies() != 1 {
		t.Fatalf("revoke family for logout: %v %v", res, err)
	}
	check("RevokeToken (family, reason in the caller's words)", map[string]float64{
		seriesKey("token_service_tokens_revoked_total", "reason", "other"):           1,
		seriesKey("token_service_security_events_total", "event_type", "revocation"): 1,
		latencyCount(procRevoke): 1,
	})

	// The same proof twice: the second is a jti replay.
	proof := k.Proof("POST", tokenURL, s.env.Clock.Now())
	replayed := &tokenv1.GenerateTokensRequest{Subject: "erin", ClientId: "spa", Audience: []string{"api"},
		DpopProof: proof, HttpMethod: "POST", HttpUri: tokenURL}
	if _, err := s.client.GenerateTokens(ctx, connect.NewRequest(replayed)); err != nil {
		t.Fatal(err)
	}
	begin()
	_, err = s.client.GenerateTokens(ctx, connect.NewRequest(replayed))
	if _, code := oauthCode(t, err); code != "invalid_dpop_proof" {
		t.Fatalf("replayed proof: %s", code)
	}
	check("GenerateTokens (replayed DPoP proof)", map[string]float64{
		seriesKey("token_service_dpop_validations_total", "status", "invalid", "error_type", "replay"): 1,
		seriesKey("token_service_security_events_total", "event_type", "dpop_replay"):                  1,
		latencyCount(procGenerate): 1,
	})

	// A resource server's check of a proof of another key than the one
	// the token is bound to.
	live := s.generateBound(t, dpoptest.NewKey(signing.ES256))
	const resource = "https://api.example/things"
	begin()
	vres, err := s.client.ValidateDPoP(ctx, connect.NewRequest(&tokenv1.ValidateDPoPRequest{
		Proof: dpoptest.NewKey(signing.ES256).Proof("GET", resource, s.env.Clock.Now(), func(p *dpoptest.Parts) {
			p.Claims["ath"] = dpoptest.ATH(live.GetAccessToken())
		}),
		HttpMethod: "GET", HttpUri: resource, AccessToken: live.GetAccessToken()}))
	if err != nil || vres.Msg.GetValid() {
		t.Fatalf("ValidateDPoP with another key: %v %v, want a refusal", vres, err)
	}
	check("ValidateDPoP (proof of another key)", map[string]float64{
		seriesKey("token_service_dpop_validations_total", "status", "invalid", "error_type", "key_mismatch"): 1,
		seriesKey("token_service_security_events_total", "event_type", "dpop_key_mismatch"):                  1,
		latencyCount("/token.v1.TokenService/ValidateDPoP"):                                                  1,
	})
}

// TestEventLogMetricsMove runs the whole app (cmd/tokend/app, which opens
// the log with the metrics as its append observer and counts the records
// the projections skip) and checks the event log and projection metrics
// against /metrics.
func TestEventLogMetricsMove(t *testing.T) {
	vars := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		"JWT_ALGORITHM": "ES256", "ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(issuertest.TestKey),
		"LOG_LEVEL": "error",
	}
	cfg, err := app.ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := app.Start(sctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	base := "http://" + m.Addr()
	hc := &http.Client{Timeout: 30 * time.Second}
	client := tokenv1connect.NewTokenServiceClient(hc, base)
	ctx := context.Background()
	scrape := func() metricSnapshot { return scrapeSnapshot(t, hc, base) }
	appends := func(result string) string {
		return seriesKey("token_service_eventlog_appends_total", "result", result)
	}
	appendCount := seriesKey("token_service_eventlog_append_seconds_count")
	badRecords := seriesKey("token_service_projection_bad_records_total", "projection", "replica")
	badFamilies := seriesKey("token_service_projection_bad_records_total", "projection", "families")
	lag := seriesKey("token_service_projection_lag_records")

	// A call that appends: result="ok" moves, and the latency histogram
	// counts every append.
	before := scrape()
	tok, err := client.GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{
		Subject: "frank", ClientId: "web", Audience: []string{"api"}}))
	if err != nil {
		t.Fatal(err)
	}
	after := scrape()
	if d := after[seriesKey("token_service_tokens_issued_total", "token_type", "Bearer", "algorithm", "ES256")] -
		before[seriesKey("token_service_tokens_issued_total", "token_type", "Bearer", "algorithm", "ES256")]; d != 1 {
		t.Errorf("GenerateTokens: tokens_issued_total{Bearer,ES256} moved by %v, want 1", d)
	}
	okMoved := after[appends("ok")] - before[appends("ok")]
	if okMoved < 1 {
		t.Errorf("GenerateTokens: %s moved by %v, want at least 1", appends("ok"), okMoved)
	}
	for _, r := range []string{"conflict", "error"} {
		if d := after[appends(r)] - before[appends(r)]; d != 0 {
			t.Errorf("GenerateTokens: %s moved by %v, want 0", appends(r), d)
		}
	}
	if d := after[appendCount] - before[appendCount]; d != okMoved {
		t.Errorf("GenerateTokens: %s moved by %v, want %v (one per append)", appendCount, d, okMoved)
	}

	// A stale expectation: the family has its issued event, the append
	// expects none.
	subjects := m.Log.Subjects()
	fid := tok.Msg.GetFamilyId()
	before = scrape()
	_, err = m.Log.Append(ctx, eventlog.Event{Subject: subjects.Family(fid, "revoked"), Type: "family.revoked"},
		eventlog.Expect{Filter: subjects.FamilyFilter(fid), Seq: 0})
	if !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("append with a stale expectation: %v, want ErrConflict", err)
	}
	assertOnlyMoved(t, "Append (stale expectation)", before, scrape(), map[string]float64{
		appends("conflict"): 1, appendCount: 1,
	})

	// An event the log refuses is an error.
	before = scrape()
	if _, err := m.Log.Append(ctx, eventlog.Event{Subject: "elsewhere.x"}, eventlog.Expect{}); !errors.Is(err, eventlog.ErrInvalidEvent) {
		t.Fatalf("append outside the prefix: %v, want ErrInvalidEvent", err)
	}
	assertOnlyMoved(t, "Append (invalid event)", before, scrape(), map[string]float64{
		appends("error"): 1, appendCount: 1,
	})

	// A record the projections cannot decode is skipped and counted.
	before = scrape()
	if _, err := m.Log.Append(ctx, eventlog.Event{Subject: subjects.Family("AAAAAAAAAAAAAAAAAAAAAA", "issued"), Type: "family.issued",
		Data: []byte{0xff, 0xff, 0xff}}, eventlog.Expect{Filter: subjects.FamilyFilter("AAAAAAAAAAAAAAAAAAAAAA")}); err != nil {
		t.Fatal(err)
	}
	var last metricSnapshot
	for deadline := time.Now().Add(20 * time.Second); ; {
		last = scrape()
		if last[badRecords]-before[badRecords] >= 1 && last[badFamilies]-before[badFamilies] >= 1 && last[lag] == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := last[lag]; !ok {
		t.Errorf("%s is not exposed", lag)
	}
	assertOnlyMoved(t, "Append (undecodable record)", before, last, map[string]float64{
		appends("ok"): 1, appendCount: 1, badRecords: 1, badFamilies: 1,
	})
	if last[lag] != 0 {
		t.Errorf("%s = %v after the projections caught up, want 0", lag, last[lag])
	}
}

// gathered returns the value of one series of m's registry (labels as
// name, value pairs), and whether it exists.
func gathered(t *testing.T, m *rpc.Metrics, name string, labels ...string) (float64, bool) {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range fams {
		if err := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain)).Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	v, ok := parseSnapshot(t, strings.NewReader(b.String()))[seriesKey(name, labels...)]
	return v, ok
}

// TestBreakerGauges: token_service_crypto_circuit_breaker_open is 1 while
// any breaker is open, whichever closes last; the labelled companion tells
// which. (With one gauge for all breakers, the last one to change won.)
func TestBreakerGauges(t *testing.T) {
	t.Parallel()
	m := rpc.NewMetrics(nil)
	signingB, envelope := m.BreakerObserver(rpc.BreakerSigning), m.BreakerObserver(rpc.BreakerEnvelope)
	want := func(step string, any, sign, env float64) {
		t.Helper()
		for _, c := range []struct {
			labels []string
			want   float64
		}{
			{nil, any},
			{[]string{"breaker", rpc.BreakerSigning}, sign},
			{[]string{"breaker", rpc.BreakerEnvelope}, env},
		} {
			name := "token_service_crypto_circuit_breaker_open"
			if c.labels != nil {
				name += "_by_breaker"
			}
			if got, ok := gathered(t, m, name, c.labels...); !ok || got != c.want {
				t.Errorf("%s: %s%v = %v (exposed %v), want %v", step, name, c.labels, got, ok, c.want)
			}
		}
	}
	want("start-up", 0, 0, 0)
	signingB.StateChanged(true)
	want("signing opens", 1, 1, 0)
	envelope.StateChanged(true)
	want("envelope opens too", 1, 1, 1)
	envelope.StateChanged(false)
	want("envelope closes, signing still open", 1, 1, 0)
	envelope.StateChanged(true)
	signingB.StateChanged(false)
	want("signing closes, envelope still open", 1, 0, 1)
	envelope.StateChanged(false)
	want("both closed", 0, 0, 0)
}

// TestForgedIsASecurityEvent: a forged record counts in both series.
func TestForgedIsASecurityEvent(t *testing.T) {
	t.Parallel()
	m := rpc.NewMetrics(nil)
	m.Forged()
	if v, _ := gathered(t, m, "token_service_eventlog_forged_records_total"); v != 1 {
		t.Errorf("forged records %v, want 1", v)
	}
	if v, _ := gathered(t, m, "token_service_security_events_total", "event_type", rpc.SecurityForgedEvent); v != 1 {
		t.Errorf("security_events_total{forged_event} %v, want 1", v)
	}
}
