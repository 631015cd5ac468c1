package app

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"pgregory.net/rapid"

	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	"github.com/auth-platform/tokenservice/eventlog"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/ssf"
	"github.com/auth-platform/tokenservice/signing"
)

// TestObservabilityProperties is the specification's observability
// property suite, against one tokend with API keys (so that refusals,
// which log, are reachable): rapid draws sequences of calls with fields,
// credentials, revocation reasons, DPoP proofs, paths and X-Correlation-ID
// values chosen by a caller (valid, absent, empty, oversized, with a
// character outside the allowed set), and after each sequence checks that
//
//   - the metrics hold exactly the series that existed at start-up, which
//     are those rpc.NewMetrics pre-creates: no family lost, no family and
//     no label value added, so nothing a caller sends creates a series
//     (checked after every call, so that a failure names the call);
//   - each call's correlation ID (the one sent if valid, else a generated
//     one) is echoed in the response, is on every log record of the call
//     and on every event the call appended, and a call that must log (a
//     refusal) or append (an issue, a rotation, a revocation) did;
//   - a malformed ID is never stored: no log record and no event carries
//     it, whole or in part.
//
// One tokend serves every case (starting one per case would be slow);
// each case issues its own tokens, so that a case does not depend on the
// ones before it. A series a case made stays, though: rapid reports such
// a failure as "flaky" (the same draws cannot make it again), and the
// original traceback and draws it prints are the counterexample.
func TestObservabilityProperties(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	keys := writeObservabilityPolicy(t, policy)
	m, logs := startForLogs(t, map[string]string{"AUTH_POLICY_FILE": policy, "KEY_ROTATION_PERIOD": "0"}, nil)

	o := &obsRig{
		m: m, logs: logs, keys: keys,
		start:  metricSeries(t, m.Metrics.Registry),
		http:   &http.Client{Timeout: 30 * time.Second},
		base:   "http://" + m.Addr(),
		holder: dpoptest.NewKey(signing.ES256),
		thief:  dpoptest.NewKey(signing.ES256),
		seen:   map[string]int{},
	}
	o.client = tokenv1connect.NewTokenServiceClient(o.http, o.base)
	// The allowed series are those rpc.NewMetrics and the Shared Signals
	// transmitter make before any call: start-up itself (configuration,
	// checkpoints, the first key) made none of its own.
	reg := rpc.NewMetrics(func() float64 { return 0 }).Registry
	ssf.RegisterMetrics(reg)
	made := metricSeries(t, reg)
	for name, set := range o.start {
		if !strings.HasPrefix(name, "token_service_") {
			continue
		}
		if !maps.Equal(set, made[name]) {
			t.Fatalf("%s at start-up has series %v, rpc.NewMetrics makes %v", name, slices.Sorted(maps.Keys(set)), slices.Sorted(maps.Keys(made[name])))
		}
	}
	for name := range made {
		if o.start[name] == nil {
			t.Fatalf("%s, made by rpc.NewMetrics, is not exposed at start-up", name)
		}
	}
	rapid.Check(t, func(rt *rapid.T) {
		st := &obsCase{series: metricSeries(rt, m.Metrics.Registry)}
		for range rapid.IntRange(1, 16).Draw(rt, "calls") {
			o.step(rt, st)
		}
		o.checkCorrelation(rt, st)
	})
	if err := checkSeries(o.start, o.start, metricSeries(t, m.Metrics.Registry)); err != nil {
		t.Fatal(err)
	}
	// What the cases reached, so that a run that exercised nothing shows.
	t.Logf("calls by outcome: %v", o.seen)
}

// The callers of the policy: every role; a resource server; an issuer
// for client web only; every role at one call per 1000 s.
const (
	credAll = iota
	credRS
	credWeb
	credFlood
	credNone
	credUnknownKey
	credNotBearer
	credCount
)

var credNames = []string{"all", "rs", "web", "flood", "none", "unknown key", "not bearer"}

// writeObservabilityPolicy writes a caller policy and returns the API key
// of each named caller by its cred* constant.
func writeObservabilityPolicy(t *testing.T, path string) map[int]string {
	t.Helper()
	entries := []struct {
		cred   int
		fields string
	}{
		{credAll, "    roles: [issuer, resource-server, admin]\n    rate_limit: {per_second: 100000, burst: 100000}\n"},
		{credRS, "    roles: [resource-server]\n    rate_limit: {per_second: 100000, burst: 100000}\n"},
		{credWeb, "    roles: [issuer]\n    client_ids: [web]\n    rate_limit: {per_second: 100000, burst: 100000}\n"},
		{credFlood, "    roles: [issuer, resource-server, admin]\n    rate_limit: {per_second: 0.001, burst: 1}\n"},
	}
	keys := map[int]string{}
	var b strings.Builder
	b.WriteString("api_keys:\n")
	for _, e := range entries {
		name := strings.ReplaceAll(credNames[e.cred], " ", "-")
		key, entry, err := auth.GenerateAPIKey(rand.Reader, name, auth.RoleAdmin)
		if err != nil {
			t.Fatal(err)
		}
		keys[e.cred] = key
		fmt.Fprintf(&b, "  - name: %s\n    sha256: %s\n%s", name, entry.SHA256, e.fields)
	}
	b.WriteString(auth.EndMarker + "\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return keys
}

// obsRig is the tokend under test and what the cases share.
type obsRig struct {
	m             *Main
	logs          *syncBuffer
	keys          map[int]string
	http          *http.Client
	base          string
	client        tokenv1connect.TokenServiceClient
	holder, thief dpoptest.Key
	seen          map[string]int // calls by name and outcome
	start         series         // the metrics' series at start-up
}

// obsCase is what one case issued and sent.
type obsCase struct {
	families []*obsFamily
	access   []string // access tokens issued
	proofs   []string // DPoP proofs sent, for replays
	calls    []obsCall
	// series are the metrics' series before the next call. The check is
	// against start-up and since the call before, so that it fails at the
	// call that made a series, and so that a series an earlier case made
	// (the server outlives a case) does not fail the cases rapid shrinks
	// to: rapid then reports the failure as flaky, with the draws of the
	// case that made the series, which is the counterexample.
	series series
}

type obsFamily struct {
	id, subject, client string
	bound               bool
	refresh             []string // oldest first; the last one is live unless revoked or reused
}

// policyAnswer is what the caller policy must do with a call.
type policyAnswer int

const (
	admitted policyAnswer = iota
	refused
	either // depends on timing (a rate limit) or on a rule the model does not state
)

// obsCall is one call and what it left.
type obsCall struct {
	name    string
	sent    string // X-Correlation-ID sent ("" with present false: no header)
	present bool
	valid   bool
	echoed  string // X-Correlation-ID of the response

	logFrom, logTo int    // the call's bytes of the log buffer
	seqFrom, seqTo uint64 // the records (seqFrom, seqTo] appended meanwhile

	policy     policyAnswer
	mustAppend bool // it succeeded at a change of state
	code       connect.Code
	err        error
}

var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// drawCorrelation draws the X-Correlation-ID a caller sends.
func drawCorrelation(t *rapid.T) (id string, present, valid bool) {
	const alphabet = `[A-Za-z0-9._:-]`
	switch rapid.IntRange(0, 6).Draw(t, "correlation kind") {
	case 0:
		return "", false, false
	case 1:
		return "", true, false
	case 2, 3:
		return rapid.StringMatching(alphabet+`{1,40}`).Draw(t, "correlation"), true, true
	case 4: // the boundary: 128 is the longest accepted
		n := rapid.SampledFrom([]int{127, 128, 129, 130}).Draw(t, "correlation length")
		s := strings.Repeat(rapid.StringMatching(alphabet+`{8}`).Draw(t, "correlation unit"), 17)[:n]
		return s, true, n <= 128
	case 5: // oversized
		return rapid.StringMatching(alphabet+`{8}`).Draw(t, "correlation unit") +
			strings.Repeat("x", rapid.IntRange(121, 2000).Draw(t, "correlation padding")), true, false
	default: // a character outside the set, never at either end (HTTP trims blanks)
		bad := rapid.SampledFrom([]string{" ", "\t", "/", "=", "@", ",", ";", `"`, "<", ">", "%", "+", "*", "!", "~",
			`\`, "#", "é", "${jndi:x}", "\u202e", "'", "&", "|"}).Draw(t, "correlation bad character")
		return rapid.StringMatching(`[A-Za-z0-9]{8,30}`).Draw(t, "correlation prefix") + bad +
			rapid.StringMatching(`[A-Za-z0-9._:-]{1,30}`).Draw(t, "correlation suffix"), true, false
	}
}

// step draws one call, sends it and records what it left.
func (o *obsRig) step(t *rapid.T, st *obsCase) {
	c := obsCall{}
	c.sent, c.present, c.valid = drawCorrelation(t)
	cred := rapid.IntRange(0, 2*credCount).Draw(t, "credential")
	if cred >= credCount {
		cred = credAll // the caller that may do everything, most of the time
	}
	h := http.Header{}
	if c.present {
		h.Set(rpc.HeaderCorrelationID, c.sent)
	}
	switch cred {
	case credNone:
	case credUnknownKey:
		h.Set("Authorization", "Bearer "+rapid.StringMatching(`[A-Za-z0-9_-]{1,80}`).Draw(t, "unknown key"))
	case credNotBearer:
		h.Set("Authorization", rapid.SampledFrom([]string{"Basic dXNlcjpwYXNz", "Bearer", "bearer  ", "Token abc", "Bearer a b"}).Draw(t, "not bearer"))
	default:
		h.Set("Authorization", "Bearer "+o.keys[cred])
	}
	// The model of the caller policy: who is refused before the handler.
	policy := func(issuer, bySubject, resourceServer bool, client string) policyAnswer {
		switch cred {
		case credAll:
			return admitted
		case credNone, credUnknownKey, credNotBearer:
			return refused
		case credRS:
			if resourceServer {
				return admitted
			}
			return refused
		case credWeb:
			switch {
			case resourceServer || bySubject:
				return refused
			case issuer && client == "web":
				return admitted
			case issuer && client != "":
				return refused
			}
			return either
		}
		return either
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.logFrom = o.logs.Len()
	c.seqFrom = o.lastSeq(t, ctx)
	var hdr http.Header
	switch op := rapid.IntRange(0, 7).Draw(t, "op"); op {
	case 0, 6:
		c.name = "GenerateTokens"
		req := o.drawGenerate(t, st)
		c.policy = policy(true, false, false, req.GetClientId())
		var resp *tokenv1.TokenResponse
		resp, hdr, c.err = send(ctx, h, o.client.GenerateTokens, req)
		if c.err == nil {
			st.families = append(st.families, &obsFamily{id: resp.GetFamilyId(), subject: req.GetSubject(), client: req.GetClientId(),
				bound: resp.GetTokenType() == "DPoP", refresh: []string{resp.GetRefreshToken()}})
			st.access = append(st.access, resp.GetAccessToken())
			c.mustAppend = true
		}
	case 1, 7:
		c.name = "RefreshTokens"
		req, fam := o.drawRefresh(t, st)
		c.policy = policy(true, false, false, req.GetClientId())
		var resp *tokenv1.TokenResponse
		resp, hdr, c.err = send(ctx, h, o.client.RefreshTokens, req)
		if c.err == nil {
			if fam != nil {
				fam.refresh = append(fam.refresh, resp.GetRefreshToken())
			}
			st.access = append(st.access, resp.GetAccessToken())
			c.mustAppend = true
		}
	case 2:
		c.name = "RevokeToken"
		req := o.drawRevoke(t, st)
		_, bySubject := req.GetTarget().(*tokenv1.RevokeTokenRequest_Subject)
		c.policy = policy(true, bySubject, false, "")
		if cred == credWeb && !bySubject {
			c.policy = admitted
		}
		var resp *tokenv1.RevokeTokenResponse
		resp, hdr, c.err = send(ctx, h, o.client.RevokeToken, req)
		c.mustAppend = c.err == nil && resp.GetRevokedFamilies() > 0
	case 3:
		c.name = "IntrospectToken"
		req := &tokenv1.IntrospectTokenRequest{
			Token:         o.drawToken(t, st, "introspected"),
			TokenTypeHint: rapid.SampledFrom([]string{"", "access_token", "refresh_token", "x"}).Draw(t, "hint"),
			Audience:      rapid.SampledFrom([]string{"", "api", "other"}).Draw(t, "introspect audience"),
		}
		c.policy = policy(false, false, true, "")
		_, hdr, c.err = send(ctx, h, o.client.IntrospectToken, req)
	case 4:
		c.name = "ValidateDPoP"
		req := o.drawValidate(t, st)
		c.policy = policy(false, false, true, "")
		_, hdr, c.err = send(ctx, h, o.client.ValidateDPoP, req)
	default:
		// A path of no policy table: refused whoever calls, and counted
		// as "unknown", not under the path.
		c.name = "POST unknown path"
		path := rapid.SampledFrom([]string{"/x-", "/token.v1.TokenService/X", "/token.v1.TokenService.", "/.well-known/x"}).Draw(t, "path prefix") +
			rapid.StringMatching(`[A-Za-z0-9._~-]{0,60}`).Draw(t, "path")
		c.policy = refused
		hdr, c.err = o.post(ctx, path, h)
	}
	c.seqTo = o.lastSeq(t, ctx)
	c.logTo = o.logs.Len()
	c.code = connect.CodeOf(c.err)
	c.echoed = hdr.Get(rpc.HeaderCorrelationID)
	if c.policy == refused && c.err == nil {
		t.Fatalf("%s by %s was admitted; the policy refuses it", c.name, credNames[cred])
	}
	now := metricSeries(t, o.m.Metrics.Registry)
	if err := checkSeries(o.start, st.series, now); err != nil {
		t.Fatalf("%s by %s, correlation %.40q: %v", c.name, credNames[cred], c.sent, err)
	}
	st.series = now
	st.calls = append(st.calls, c)
	outcome := "ok"
	if c.err != nil {
		outcome = c.code.String()
	}
	o.seen[fmt.Sprintf("%s %s appends=%d", c.name, outcome, c.seqTo-c.seqFrom)]++
	if c.present && !c.valid {
		o.seen["malformed correlation ID"]++
	}
}

// send makes one Connect call with headers h and returns its answer's
// headers (an error's metadata when it fails).
func send[Req, Res any](ctx context.Context, h http.Header, call func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), msg *Req) (*Res, http.Header, error) {
	req := connect.NewRequest(msg)
	for k, v := range h {
		req.Header()[k] = v
	}
	resp, err := call(ctx, req)
	if err != nil {
		var ce *connect.Error
		if errors.As(err, &ce) {
			return nil, ce.Meta(), err
		}
		return nil, http.Header{}, err
	}
	return resp.Msg, resp.Header(), nil
}

// post sends an empty Connect-shaped POST to path.
func (o *obsRig) post(ctx context.Context, path string, h http.Header) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.base+path, strings.NewReader("{}"))
	if err != nil {
		return http.Header{}, err
	}
	req.Header = h
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.http.Do(req)
	if err != nil {
		return http.Header{}, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode == http.StatusOK {
		return resp.Header, nil
	}
	return resp.Header, connect.NewError(connect.CodeUnknown, fmt.Errorf("HTTP %d", resp.StatusCode))
}

func (o *obsRig) lastSeq(t *rapid.T, ctx context.Context) uint64 {
	seq, err := o.m.Log.LastSeq(ctx)
	if err != nil {
		t.Fatalf("last sequence: %v", err)
	}
	return seq
}

const tokenEndpoint = "https://auth.example/token"

// drawText draws a string field: plausible, empty, any Unicode, or long.
func drawText(t *rapid.T, label string, plausible ...string) string {
	switch rapid.IntRange(0, 11).Draw(t, label+" kind") {
	case 0:
		return ""
	case 1:
		return rapid.String().Draw(t, label)
	case 2:
		return strings.Repeat("z", rapid.IntRange(60, 2000).Draw(t, label+" length"))
	default:
		return rapid.SampledFrom(plausible).Draw(t, label)
	}
}

func (o *obsRig) drawGenerate(t *rapid.T, st *obsCase) *tokenv1.GenerateTokensRequest {
	req := &tokenv1.GenerateTokensRequest{
		Subject:  drawText(t, "subject", "alice", "bob", "user-"+rapid.StringMatching(`[a-z0-9]{1,12}`).Draw(t, "subject id")),
		ClientId: drawText(t, "client_id", "web", "web", "mobile"),
		Audience: []string{"api"},
		Scopes:   rapid.SliceOfN(rapid.StringMatching(`[a-z]{1,12}`), 0, 3).Draw(t, "scopes"),
	}
	if rapid.IntRange(0, 3).Draw(t, "odd audience and scopes") == 0 {
		req.Audience = rapid.SliceOfN(rapid.SampledFrom([]string{"api", "other", "", "https://api.example"}), 0, 3).Draw(t, "audience")
		req.Scopes = rapid.SliceOfN(rapid.String(), 0, 4).Draw(t, "odd scopes")
	}
	switch rapid.IntRange(0, 3).Draw(t, "generate proof") {
	case 1:
		req.DpopProof, req.HttpMethod, req.HttpUri = o.holder.Proof("POST", tokenEndpoint, time.Now()), "POST", tokenEndpoint
		st.proofs = append(st.proofs, req.DpopProof)
	case 2:
		req.DpopProof = o.drawGarbageProof(t, st)
		req.HttpMethod = rapid.SampledFrom([]string{"POST", "GET", "", "PO ST"}).Draw(t, "generate htm")
		req.HttpUri = rapid.SampledFrom([]string{tokenEndpoint, "", "not a uri", "https://evil.example/token"}).Draw(t, "generate htu")
	}
	return req
}

func (o *obsRig) drawRefresh(t *rapid.T, st *obsCase) (*tokenv1.RefreshTokensRequest, *obsFamily) {
	req := &tokenv1.RefreshTokensRequest{ClientId: drawText(t, "refresh client_id", "web", "mobile")}
	var fam *obsFamily
	if len(st.families) > 0 && rapid.IntRange(0, 3).Draw(t, "refresh known") > 0 {
		fam = rapid.SampledFrom(st.families).Draw(t, "family")
		if rapid.IntRange(0, 2).Draw(t, "refresh client") > 0 {
			req.ClientId = fam.client
		}
		// The live token most often; a spent one (reuse) otherwise.
		i := len(fam.refresh) - 1
		if rapid.IntRange(0, 3).Draw(t, "refresh spent") == 0 {
			i = rapid.IntRange(0, i).Draw(t, "refresh index")
		}
		req.RefreshToken = fam.refresh[i]
		if fam.bound && rapid.Bool().Draw(t, "refresh with proof") {
			k := o.holder
			if rapid.IntRange(0, 3).Draw(t, "thief") == 0 {
				k = o.thief
			}
			req.DpopProof, req.HttpMethod, req.HttpUri = k.Proof("POST", tokenEndpoint, time.Now()), "POST", tokenEndpoint
			st.proofs = append(st.proofs, req.DpopProof)
		}
		return req, fam
	}
	req.RefreshToken = o.drawGarbageToken(t, st, "refresh token")
	return req, nil
}

func (o *obsRig) drawRevoke(t *rapid.T, st *obsCase) *tokenv1.RevokeTokenRequest {
	req := &tokenv1.RevokeTokenRequest{
		// Names of the bounded set, the specification's words, free text
		// (control characters and over 64 bytes included), nothing.
		Reason: rapid.OneOf(
			rapid.SampledFrom([]string{"", "client", "subject", "key_compromise", "admin", "reuse", "other", "unspecified", "logout", "password_change", "Logout", "admin "}),
			rapid.String(),
			rapid.StringMatching(`[a-z_ ]{1,80}`),
		).Draw(t, "reason"),
	}
	var fam *obsFamily
	if len(st.families) > 0 && rapid.IntRange(0, 3).Draw(t, "revoke known") > 0 {
		fam = rapid.SampledFrom(st.families).Draw(t, "revoked family")
	}
	switch rapid.IntRange(0, 3).Draw(t, "revoke target") {
	case 0:
		tok := o.drawGarbageToken(t, st, "revoked refresh token")
		if fam != nil {
			tok = rapid.SampledFrom(fam.refresh).Draw(t, "revoked refresh")
		}
		req.Target = &tokenv1.RevokeTokenRequest_RefreshToken{RefreshToken: tok}
	case 1:
		req.Target = &tokenv1.RevokeTokenRequest_AccessToken{AccessToken: o.drawToken(t, st, "revoked access token")}
	case 2:
		id := drawText(t, "revoked family id", "f-unknown")
		if fam != nil {
			id = fam.id
		}
		req.Target = &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: id}
	default:
		sub := drawText(t, "revoked subject", "nobody")
		if fam != nil {
			sub = fam.subject
		}
		req.Target = &tokenv1.RevokeTokenRequest_Subject{Subject: sub}
	}
	return req
}

func (o *obsRig) drawValidate(t *rapid.T, st *obsCase) *tokenv1.ValidateDPoPRequest {
	const resource = "https://api.example/things"
	req := &tokenv1.ValidateDPoPRequest{
		HttpMethod:  rapid.SampledFrom([]string{"GET", "POST", "", "get"}).Draw(t, "validate htm"),
		HttpUri:     rapid.SampledFrom([]string{resource, "", "https://api.example/other", "::"}).Draw(t, "validate htu"),
		AccessToken: o.drawToken(t, st, "validated access token"),
		Audience:    rapid.SampledFrom([]string{"", "api", "other"}).Draw(t, "validate audience"),
	}
	switch rapid.IntRange(0, 2).Draw(t, "validate proof") {
	case 0: // a proof of the holder, for this access token or not
		k := o.holder
		if rapid.IntRange(0, 3).Draw(t, "validate thief") == 0 {
			k = o.thief
		}
		at := req.AccessToken
		req.Proof = k.Proof(req.HttpMethod, req.HttpUri, time.Now(), func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH(at) })
		st.proofs = append(st.proofs, req.Proof)
	default:
		req.Proof = o.drawGarbageProof(t, st)
	}
	return req
}

// drawGarbageProof draws what a broken or hostile client sends as a DPoP
// proof: nothing, any text, three base64url parts of anything, a proof
// sent before (a replay), or one with a character changed.
func (o *obsRig) drawGarbageProof(t *rapid.T, st *obsCase) string {
	b64 := func(label string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(rapid.String().Draw(t, label)))
	}
	switch rapid.IntRange(0, 5).Draw(t, "garbage proof kind") {
	case 0:
		return ""
	case 1:
		return rapid.String().Draw(t, "garbage proof")
	case 2:
		return b64("proof header") + "." + b64("proof claims") + "." + b64("proof signature")
	case 3:
		return strings.Repeat("A", rapid.IntRange(4000, 20000).Draw(t, "proof length"))
	default:
		if len(st.proofs) == 0 {
			return `{"alg":"none"}..`
		}
		p := rapid.SampledFrom(st.proofs).Draw(t, "replayed proof")
		if rapid.Bool().Draw(t, "tamper") {
			i := rapid.IntRange(0, len(p)-1).Draw(t, "tampered at")
			c := byte('A')
			if p[i] == 'A' {
				c = 'B'
			}
			p = p[:i] + string(c) + p[i+1:]
		}
		return p
	}
}

// drawToken draws an access token of the case or garbage.
func (o *obsRig) drawToken(t *rapid.T, st *obsCase, label string) string {
	if len(st.access) > 0 && rapid.Bool().Draw(t, label+" known") {
		return rapid.SampledFrom(st.access).Draw(t, label)
	}
	return o.drawGarbageToken(t, st, label)
}

// drawGarbageToken draws a token no one issued, some shaped like ours.
func (o *obsRig) drawGarbageToken(t *rapid.T, st *obsCase, label string) string {
	switch rapid.IntRange(0, 3).Draw(t, label+" garbage kind") {
	case 0:
		return rapid.String().Draw(t, label)
	case 1:
		fam := "f-unknown"
		if len(st.families) > 0 {
			fam = rapid.SampledFrom(st.families).Draw(t, label+" family").id
		}
		return fam + "." + rapid.StringMatching(`[A-Za-z0-9_-]{0,60}`).Draw(t, label+" secret")
	case 2:
		return "eyJhbGciOiJFUzI1NiJ9." + rapid.StringMatching(`[A-Za-z0-9_-]{0,40}`).Draw(t, label+" claims") + ".sig"
	default:
		return ""
	}
}

// checkCorrelation checks every call of the case against the log records
// it wrote and the events it appended.
func (o *obsRig) checkCorrelation(t *rapid.T, st *obsCase) {
	if len(st.calls) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var records []eventlog.Record
	first, last := st.calls[0].seqFrom, st.calls[len(st.calls)-1].seqTo
	if last > first {
		if err := o.m.Log.Replay(ctx, first+1, nil, func(r eventlog.Record) {
			if r.Seq <= last {
				records = append(records, r)
			}
		}); err != nil {
			t.Fatalf("replay: %v", err)
		}
	}
	var malformed []string
	for _, c := range st.calls {
		if c.present && !c.valid && c.sent != "" {
			malformed = append(malformed, c.sent)
		}
	}
	for i, c := range st.calls {
		what := fmt.Sprintf("call %d (%s, correlation %.40q, %v)", i, c.name, c.sent, c.err)
		// The ID: the one sent if valid, else a new one.
		switch {
		case c.valid && c.echoed != c.sent:
			t.Fatalf("%s: answered with correlation ID %q, want the one sent", what, c.echoed)
		case !c.valid && !generatedID.MatchString(c.echoed):
			t.Fatalf("%s: answered with correlation ID %.40q, want a generated one (32 hex digits)", what, c.echoed)
		}
		id := c.echoed

		// The log records of the call.
		var refusalLogged bool
		for _, rec := range logRecords(t, o.logs.Slice(c.logFrom, c.logTo)) {
			cid, has := rec["correlation_id"]
			msg, _ := rec["msg"].(string)
			if (msg == "call refused" || msg == "request failed") && !has {
				t.Fatalf("%s: %q logged without a correlation ID: %v", what, msg, rec)
			}
			if has && cid != id {
				t.Fatalf("%s: a record of the call is logged with correlation ID %v, want %q: %v", what, cid, id, rec)
			}
			refusalLogged = refusalLogged || msg == "call refused"
		}
		switch c.policy {
		case refused:
			if !refusalLogged {
				t.Fatalf("%s: refused by the caller policy, but no \"call refused\" record carries its correlation ID", what)
			}
			if c.name != "POST unknown path" && c.code != connect.CodeUnauthenticated && c.code != connect.CodePermissionDenied {
				t.Fatalf("%s: refused by the caller policy with code %v", what, c.code)
			}
		case admitted:
			if refusalLogged {
				t.Fatalf("%s: admitted by the caller policy, but logged as refused", what)
			}
		default:
			if c.code == connect.CodeResourceExhausted && !refusalLogged {
				t.Fatalf("%s: rate-limited without a \"call refused\" record", what)
			}
		}

		// The events it appended.
		var appended int
		for _, r := range records {
			if r.Seq <= c.seqFrom || r.Seq > c.seqTo {
				continue
			}
			appended++
			if r.CorrelationID != id {
				t.Fatalf("%s: appended %s (seq %d) with correlation ID %q, want %q", what, r.Type, r.Seq, r.CorrelationID, id)
			}
		}
		if c.mustAppend && appended == 0 {
			t.Fatalf("%s: succeeded at a change of state, but no event was appended while it ran", what)
		}
	}
	// Records appended between calls are the service's own: none may
	// carry a call's ID (an event appended after its call answered).
	for _, r := range records {
		inside := slices.ContainsFunc(st.calls, func(c obsCall) bool { return r.Seq > c.seqFrom && r.Seq <= c.seqTo })
		if !inside && r.CorrelationID != "" && slices.ContainsFunc(st.calls, func(c obsCall) bool { return c.echoed == r.CorrelationID }) {
			t.Fatalf("%s (seq %d) carries correlation ID %q but was appended after its call answered", r.Type, r.Seq, r.CorrelationID)
		}
	}

	// A malformed ID is stored nowhere, not even in part of a field.
	if len(malformed) == 0 {
		return
	}
	for _, r := range records {
		for _, bad := range malformed {
			if strings.Contains(r.CorrelationID, bad) || strings.Contains(string(r.Data), bad) {
				t.Fatalf("event %s (seq %d) holds the malformed correlation ID %.40q", r.Type, r.Seq, bad)
			}
		}
	}
	for _, rec := range logRecords(t, o.logs.Slice(st.calls[0].logFrom, st.calls[len(st.calls)-1].logTo)) {
		for _, bad := range malformed {
			if holds(rec, bad) {
				t.Fatalf("a log record holds the malformed correlation ID %.40q: %v", bad, rec)
			}
		}
	}
}

// logRecords parses JSON log lines.
func logRecords(t *rapid.T, text string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v: %.200s", err, sc.Text())
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the log: %v", err)
	}
	return out
}

// holds reports whether any string in v, keys included, contains s.
func holds(v any, s string) bool {
	switch v := v.(type) {
	case string:
		return strings.Contains(v, s)
	case map[string]any:
		for k, e := range v {
			if strings.Contains(k, s) || holds(e, s) {
				return true
			}
		}
	case []any:
		return slices.ContainsFunc(v, func(e any) bool { return holds(e, s) })
	}
	return false
}

// Len returns how many bytes were logged so far.
func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// Slice returns the bytes logged from offset from to offset to.
func (b *syncBuffer) Slice(from, to int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf.Bytes()[from:to])
}

// series are the label sets of every series the registry exposes, by
// family.
type series map[string]map[string]bool

// metricSeries returns the series the registry exposes.
func metricSeries(t interface{ Fatalf(string, ...any) }, r *prometheus.Registry) series {
	fams, err := r.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := series{}
	for _, f := range fams {
		set := map[string]bool{}
		for _, s := range f.GetMetric() {
			var b strings.Builder
			for _, l := range s.GetLabel() { // sorted by name
				fmt.Fprintf(&b, "%s=%q,", l.GetName(), l.GetValue())
			}
			set[b.String()] = true
		}
		out[f.GetName()] = set
	}
	return out
}

// checkSeries returns an error if a family of start is gone from now, or
// if now has a family or a series that is neither in start nor in before.
func checkSeries(start, before, now series) error {
	for name := range start {
		if now[name] == nil {
			return fmt.Errorf("metric %s, exposed at start-up, is gone", name)
		}
	}
	for name, set := range now {
		if start[name] == nil && before[name] == nil {
			return fmt.Errorf("metric %s appeared after start-up", name)
		}
		for labels := range set {
			if !start[name][labels] && !before[name][labels] {
				return fmt.Errorf("series %s{%.200s} appeared after start-up: a label value outside the set pre-created at start-up", name, labels)
			}
		}
	}
	return nil
}
