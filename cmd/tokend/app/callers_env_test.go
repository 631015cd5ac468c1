package app_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/auth/authtest"
)

// Identities of the test policy's certificate callers.
const (
	issuerURI = "spiffe://test.example/ns/auth/sa/login"
	rsURI     = "spiffe://test.example/ns/api/sa/orders"
	adminCN   = "ops-admin"
)

// secured is a tokend started in process with TLS, API keys and client
// certificates (AUTH_MODE=apikey,mtls), a metrics listener of its own, and
// the credentials of its policy.
type secured struct {
	m       *app.Main
	dir     string
	ca      *authtest.CA
	url     string // https://127.0.0.1:port
	keys    map[string]string
	certs   map[string]*authtest.Cert
	policy  string // AUTH_POLICY_FILE
	logs    *logBuffer
	clients map[string]*http.Client
}

// policyEntries are the API-key callers of the test policy: name → YAML
// fields after name and sha256.
var policyEntries = []struct{ name, fields string }{
	{"login", "    roles: [issuer]\n    client_ids: [web]\n"},
	{"login-any", "    roles: [issuer]\n"},
	{"orders-api", "    roles: [resource-server]\n"},
	{"ops", "    roles: [admin]\n"},
	{"retired", "    roles: [issuer, resource-server, admin]\n    expires: \"2020-01-01T00:00:00Z\"\n"},
	{"flood", "    roles: [issuer, resource-server, admin]\n    rate_limit: {per_second: 0.001, burst: 1}\n"},
}

const policyMTLS = `mtls:
  - identity: ` + issuerURI + `
    name: login-mtls
    roles: [issuer]
    client_ids: [web]
  - identity: ` + rsURI + `
    name: orders-mtls
    roles: [resource-server]
  - identity: ` + adminCN + `
    name: ops-mtls
    roles: [admin]
`

// writePolicy writes the policy file with entries (and extra YAML) and
// returns the keys by name.
func writePolicy(t testing.TB, path string, entries []struct{ name, fields string }, extra string) map[string]string {
	t.Helper()
	keys := map[string]string{}
	var b strings.Builder
	b.WriteString("# test callers\napi_keys:\n")
	for _, e := range entries {
		key, entry, err := auth.GenerateAPIKey(rand.Reader, e.name, auth.RoleAdmin)
		if err != nil {
			t.Fatal(err)
		}
		keys[e.name] = key
		fmt.Fprintf(&b, "  - name: %s\n    sha256: %s\n%s", e.name, entry.SHA256, e.fields)
	}
	b.WriteString(extra)
	b.WriteString(auth.EndMarker + "\n")
	// Write and rename, as a secret mount or an editor replaces a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return keys
}

// baseVars are the variables every test tokend gets: loopback, a fresh
// data directory, no scheduled rotation (nothing appends on its own).
func baseVars(t testing.TB) map[string]string {
	return map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		"LOG_LEVEL": "info", "JWT_ALGORITHM": "ES256", "KEY_ROTATION_PERIOD": "0", "REFRESH_REUSE_GRACE": "0",
		"ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)),
	}
}

// startSecured starts tokend with TLS, mTLS and API keys; extra
// variables override the defaults ("" deletes one).
func startSecured(t testing.TB, extra map[string]string) *secured {
	t.Helper()
	s := &secured{dir: t.TempDir(), ca: authtest.NewCA(t, "tokend test CA"), certs: map[string]*authtest.Cert{}, clients: map[string]*http.Client{}}
	s.policy = filepath.Join(s.dir, "policy.yaml")
	s.keys = writePolicy(t, s.policy, policyEntries, policyMTLS)
	certFile, keyFile := s.ca.ServerCert(t).WriteFiles(t, s.dir, "server")
	s.certs["issuer"] = s.ca.ClientURI(t, issuerURI)
	s.certs["rs"] = s.ca.ClientURI(t, rsURI)
	s.certs["admin"] = s.ca.ClientCN(t, adminCN)
	s.certs["expired"] = s.ca.Expired(t, issuerURI)
	s.certs["other-ca"] = authtest.NewCA(t, "another CA").ClientURI(t, issuerURI)
	vars := baseVars(t)
	for k, v := range map[string]string{
		"AUTH_POLICY_FILE": s.policy, "TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile,
		"TLS_CLIENT_CA_FILE": s.ca.WriteFile(t, s.dir, "clients-ca.pem"), "METRICS_ADDR": "127.0.0.1:0",
		"MAX_REQUEST_BYTES": "4096",
	} {
		vars[k] = v
	}
	for k, v := range extra {
		if v == "" {
			delete(vars, k)
		} else {
			vars[k] = v
		}
	}
	s.logs = &logBuffer{}
	s.m = startApp(t, vars, s.logs)
	s.url = "https://" + s.m.Addr()
	return s
}

// startApp starts tokend with vars and stops it when t ends.
func startApp(t testing.TB, vars map[string]string, logs *logBuffer) *app.Main {
	t.Helper()
	cfg, err := app.ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var h slog.Handler = slog.DiscardHandler
	if logs != nil {
		h = slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})
	}
	m, err := app.Start(ctx, cfg, slog.New(h))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return m
}

// httpClient returns a kept-alive HTTP/2 client (HTTP/1.1 with h1) that
// trusts the test CA and presents the named certificate ("" none),
// whatever CAs the server asks for.
func (s *secured) httpClient(t testing.TB, cert string, h1 bool) *http.Client {
	t.Helper()
	id := fmt.Sprintf("%s/%v", cert, h1)
	if c, ok := s.clients[id]; ok {
		return c
	}
	cfg := authtest.ClientTLS(s.ca, nil)
	if cert != "" {
		c := s.certs[cert]
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c.TLS, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: !h1}
	if h1 {
		cfg.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	s.clients[id] = c
	return c
}

// client returns a TokenService client over protocol (connect, grpc,
// grpc-web) as the caller: an API key name, "key:<raw key>", or
// "cert:<name>".
func (s *secured) client(t testing.TB, protocol, caller string) tokenv1connect.TokenServiceClient {
	t.Helper()
	var cert, authorization string
	switch {
	case strings.HasPrefix(caller, "cert:"):
		cert = strings.TrimPrefix(caller, "cert:")
	case strings.HasPrefix(caller, "key:"):
		authorization = "Bearer " + strings.TrimPrefix(caller, "key:")
	case caller != "":
		key, ok := s.keys[caller]
		if !ok {
			t.Fatalf("no key %q", caller)
		}
		authorization = "Bearer " + key
	}
	return tokenv1connect.NewTokenServiceClient(s.httpClient(t, cert, false), s.url, protocolOptions(protocol, authorization)...)
}

func protocolOptions(protocol, authorization string) []connect.ClientOption {
	var opts []connect.ClientOption
	switch protocol {
	case "grpc":
		opts = append(opts, connect.WithGRPC())
	case "grpc-web":
		opts = append(opts, connect.WithGRPCWeb())
	case "connect":
	default:
		panic("protocol " + protocol)
	}
	if authorization != "" {
		opts = append(opts, connect.WithInterceptors(headerInterceptor{"Authorization", authorization}))
	}
	return opts
}

// headerInterceptor sets a request header on every call.
type headerInterceptor struct{ name, value string }

func (h headerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set(h.name, h.value)
		return next(ctx, req)
	}
}

func (h headerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set(h.name, h.value)
		return conn
	}
}

func (h headerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// lastSeq returns the stream's last sequence.
func lastSeq(t testing.TB, m *app.Main) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seq, err := m.Log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// waitFor polls cond for up to 15 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logBuffer collects log lines safely.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// h2cClient returns an HTTP/2 cleartext client (development mode).
func h2cClient(t testing.TB) *http.Client {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: protocols}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}
