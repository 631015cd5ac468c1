package ssf_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/ssf"
	"github.com/auth-platform/tokenservice/signing"
)

// tokenIssuer is the iss of the access tokens issuertest makes.
const tokenIssuer = "https://issuer.test"

// harness is a transmitter on a real embedded JetStream node with a real
// issuer and keyring, served over HTTP behind the real guard.
type harness struct {
	t      *testing.T
	env    *issuertest.Env
	svc    *ssf.Service
	srv    *httptest.Server
	reg    *prometheus.Registry
	keys   map[string]string // caller name -> API key
	opts   harnessOptions
	cancel context.CancelFunc
	done   chan struct{}
}

type harnessOptions struct {
	env         *issuertest.Env
	maxStreams  int
	pushTimeout time.Duration // default 2 s
	retention   time.Duration // default the package's
	maxPending  int           // per stream; default the package's
	now         func() time.Time
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	env := o.env
	if env == nil {
		env = issuertest.New(t, issuertest.Options{})
	}
	if o.pushTimeout == 0 {
		o.pushTimeout = 2 * time.Second
	}
	h := &harness{t: t, env: env, keys: map[string]string{}, reg: prometheus.NewRegistry(), opts: o}
	var pf auth.PolicyFile
	for name, role := range map[string]auth.Role{"alice": auth.RoleReceiver, "bob": auth.RoleReceiver, "carol": auth.RoleReceiver,
		"ops": auth.RoleAdmin, "login": auth.RoleIssuer} {
		key, entry, err := auth.GenerateAPIKey(rand.Reader, name, role)
		if err != nil {
			t.Fatal(err)
		}
		if name == "carol" {
			entry.Audiences = []string{"crm"} // a partner: restricted to its audience
		}
		h.keys[name] = key
		pf.APIKeys = append(pf.APIKeys, entry)
	}
	data, err := json.Marshal(pf)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, append(data, []byte("\n"+auth.EndMarker+"\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	policy, err := auth.LoadPolicy(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	guard, err := auth.New(auth.Config{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	var handler http.Handler
	var mu sync.Mutex
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hd := handler
		mu.Unlock()
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		hd.ServeHTTP(w, r)
	}))
	t.Cleanup(h.srv.Close)
	h.svc = h.newService(t, h.reg)
	mux := http.NewServeMux()
	h.svc.Register(mux)
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(struct {
			Keys []signing.JWK `json:"keys"`
		}{env.Set.JWKS()})
	})
	mu.Lock()
	handler = guard.Middleware(mux)
	mu.Unlock()
	h.start(t)
	return h
}

func (h *harness) newService(t *testing.T, reg prometheus.Registerer) *ssf.Service {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := ssf.New(ctx, ssf.Config{Log: h.env.Log, Keys: h.env.Keyring, Published: h.env.Set, Sealer: h.env.Sealer, Issuer: h.srv.URL, TokenIssuer: tokenIssuer,
		PushTimeout: h.opts.pushTimeout, PushBackoff: 20 * time.Millisecond, PushMaxBackoff: 200 * time.Millisecond,
		MaxStreams: h.opts.maxStreams, Retention: h.opts.retention, MaxPendingPerStream: h.opts.maxPending, Now: h.opts.now, Registerer: reg,
		PushURLs: ssf.PushURLPolicy{AllowLoopback: true}}) // receivers are httptest servers on 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func (h *harness) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		if err := h.svc.Run(ctx); err != nil {
			t.Errorf("ssf Run: %v", err)
		}
	}()
	t.Cleanup(h.stop)
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
}

// call sends a request as caller (a name of h.keys, or "" for none) and
// returns the status and body.
func (h *harness) call(caller, method, path string, body any) (int, []byte) {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	url := path
	if strings.HasPrefix(path, "/") {
		url = h.srv.URL + path
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if caller != "" {
		req.Header.Set("Authorization", "Bearer "+h.keys[caller])
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// must sends a request and fails the test unless the status is want; it
// decodes the answer into v if v is not nil.
func (h *harness) must(want int, caller, method, path string, body, v any) {
	h.t.Helper()
	code, out := h.call(caller, method, path, body)
	if code != want {
		h.t.Fatalf("%s %s as %q: status %d, want %d: %s", method, path, caller, code, want, out)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			h.t.Fatalf("%s %s: %v: %s", method, path, err, out)
		}
	}
}

func (h *harness) createStream(caller string, req map[string]any) ssf.StreamConfig {
	h.t.Helper()
	var cfg ssf.StreamConfig
	h.must(http.StatusCreated, caller, http.MethodPost, ssf.PathStreams, req, &cfg)
	return cfg
}

// poll polls the stream's endpoint with req.
func (h *harness) poll(caller string, cfg ssf.StreamConfig, req map[string]any) ssf.PollResponse {
	h.t.Helper()
	var resp ssf.PollResponse
	h.must(http.StatusOK, caller, http.MethodPost, cfg.Delivery.EndpointURL, req, &resp)
	return resp
}

// pollUntil polls (long polls) until n SETs are returned, or fails after
// timeout.
func (h *harness) pollUntil(caller string, cfg ssf.StreamConfig, n int, timeout time.Duration) map[string]string {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp := h.poll(caller, cfg, map[string]any{"maxEvents": 100, "returnImmediately": false})
		if len(resp.Sets) >= n {
			return resp.Sets
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("poll: %d SETs after %s, want %d", len(resp.Sets), timeout, n)
		}
	}
}

func (h *harness) generate(subject string) issuer.Tokens {
	h.t.Helper()
	tok, err := h.env.Issuer.Generate(context.Background(), issuer.GenerateRequest{Subject: subject, ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// set is a verified SET.
type set struct {
	Header jose.Header
	Claims struct {
		Iss    string                    `json:"iss"`
		Jti    string                    `json:"jti"`
		Iat    int64                     `json:"iat"`
		Aud    josejwt.Audience          `json:"aud"`
		SubID  ssf.Subject               `json:"sub_id"`
		Events map[string]map[string]any `json:"events"`
	}
}

// verify checks raw against the JWKS the service publishes, with go-jose
// (a verifier that is not ours), and returns its claims.
func (h *harness) verify(raw string) set {
	h.t.Helper()
	var jwks jose.JSONWebKeySet
	h.must(http.StatusOK, "", http.MethodGet, "/.well-known/jwks.json", nil, &jwks)
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.PS256, jose.ES384, jose.EdDSA})
	if err != nil {
		h.t.Fatalf("SET does not parse: %v", err)
	}
	var out set
	out.Header = tok.Headers[0]
	keys := jwks.Key(out.Header.KeyID)
	if len(keys) != 1 {
		h.t.Fatalf("SET kid %q: %d keys in the JWKS", out.Header.KeyID, len(keys))
	}
	if err := tok.Claims(keys[0].Key, &out.Claims); err != nil {
		h.t.Fatalf("SET signature: %v", err)
	}
	if typ, _ := out.Header.ExtraHeaders["typ"].(string); typ != "secevent+jwt" {
		h.t.Fatalf("SET typ %q, want secevent+jwt", typ)
	}
	if out.Claims.Iss != h.srv.URL || out.Claims.Jti == "" || out.Claims.Iat == 0 || len(out.Claims.Events) != 1 {
		h.t.Fatalf("SET claims: %+v", out.Claims)
	}
	return out
}

// receiver is a push receiver (RFC 8935) on a local HTTP server.
type receiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	down  bool
	auth  []string
	tried []string // every body received, refused or not
	sets  []string
	got   chan string
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{got: make(chan string, 1000)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		down := r.down
		r.auth = append(r.auth, req.Header.Get("Authorization"))
		r.tried = append(r.tried, string(body))
		r.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if req.Header.Get("Content-Type") != "application/secevent+jwt" {
			http.Error(w, `{"err":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.sets = append(r.sets, string(body))
		r.mu.Unlock()
		r.got <- string(body)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

func (r *receiver) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case s := <-r.got:
		return s
	case <-time.After(timeout):
		t.Fatalf("no SET pushed within %s", timeout)
	}
	return ""
}

// metric returns the value of the series name{labels} of h's registry (0
// if absent).
func metric(h *harness, name string, labels ...string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func deliveries(h *harness, method, outcome string) float64 {
	return metric(h, "token_service_ssf_deliveries_total", "method", method, "outcome", outcome)
}

// waitGauge waits until gauge name reads want.
func waitGauge(t *testing.T, h *harness, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := metric(h, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor waits until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newReceiverFunc(t *testing.T, fn http.HandlerFunc) *httptest.Server {
	srv := httptest.NewServer(fn)
	t.Cleanup(srv.Close)
	return srv
}
