package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/cmd/tokenctl/ctl"
	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/auth/authtest"
)

// TestStartRefusesUnauthenticatedExposure: without authentication tokend
// starts only on loopback, and says why otherwise; on loopback it warns.
func TestStartRefusesUnauthenticatedExposure(t *testing.T) {
	for _, tc := range []struct {
		name string
		vars map[string]string
		want []string
	}{
		{"HOST on every interface", map[string]string{"HOST": "0.0.0.0"},
			[]string{"refusing to start", "HOST=0.0.0.0 is not a loopback address", "mint tokens", "AUTH_POLICY_FILE", "HOST=127.0.0.1"}},
		{"HOST on an address of the machine", map[string]string{"HOST": "192.0.2.10"},
			[]string{"HOST=192.0.2.10 is not a loopback address"}},
		{"HOST by name", map[string]string{"HOST": "tokend.internal"},
			[]string{"HOST=tokend.internal is not a loopback address"}},
		{"embedded NATS on every interface", map[string]string{"NATS_LISTEN": "0.0.0.0:0"},
			[]string{"refusing to start", "NATS_LISTEN=0.0.0.0:0 is not a loopback address", "without credentials"}},
		{"explicit none", map[string]string{"HOST": "::", "AUTH_MODE": "none"},
			[]string{"HOST=:: is not a loopback address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := baseVars(t)
			for k, v := range tc.vars {
				vars[k] = v
			}
			cfg, err := app.ConfigFromEnv(func(k string) string { return vars[k] })
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			m, err := app.Start(ctx, cfg, discardLogger())
			if err == nil {
				_ = m.Close(ctx)
				t.Fatal("started without authentication on a non-loopback address")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not say %q", err, w)
				}
			}
			if _, statErr := os.Stat(filepath.Join(vars["DATA_DIR"], "encryption.key")); statErr == nil {
				t.Error("refused after touching DATA_DIR")
			}
		})
	}
	t.Run("loopback warns", func(t *testing.T) {
		logs := &logBuffer{}
		vars := baseVars(t)
		m := startApp(t, vars, logs)
		if !strings.Contains(logs.String(), "AUTH_MODE=none: callers are not authenticated") {
			t.Fatalf("no warning:\n%s", logs)
		}
		if !strings.Contains(logs.String(), "DPOP_TOKEN_ENDPOINTS is not set") {
			t.Fatalf("no warning about DPOP_TOKEN_ENDPOINTS:\n%s", logs)
		}
		// Development stays open: a call without credential works.
		client := tokenv1connect.NewTokenServiceClient(h2cClient(t), "http://"+m.Addr(), connect.WithGRPC())
		if _, err := client.RotateSigningKey(context.Background(), connect.NewRequest(&tokenv1.RotateSigningKeyRequest{})); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("non-loopback with API keys", func(t *testing.T) {
		vars := baseVars(t)
		dir := t.TempDir()
		policy := filepath.Join(dir, "p.yaml")
		writePolicy(t, policy, policyEntries, "")
		vars["HOST"], vars["AUTH_POLICY_FILE"] = "0.0.0.0", policy
		vars["DPOP_TOKEN_ENDPOINTS"] = "https://login.example/token"
		logs := &logBuffer{}
		m := startApp(t, vars, logs)
		if !strings.Contains(logs.String(), "API keys reach this port in clear text") {
			t.Fatalf("no clear-text warning:\n%s", logs)
		}
		if strings.Contains(logs.String(), "DPOP_TOKEN_ENDPOINTS is not set") {
			t.Fatalf("warned about DPOP_TOKEN_ENDPOINTS, which is set:\n%s", logs)
		}
		_, port, _ := net.SplitHostPort(m.Addr())
		client := tokenv1connect.NewTokenServiceClient(h2cClient(t), "http://127.0.0.1:"+port, connect.WithGRPC())
		_, err := client.RotateSigningKey(context.Background(), connect.NewRequest(&tokenv1.RotateSigningKeyRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("call without credential: %v", err)
		}
	})
}

// TestCallerConfig: each inconsistent combination stops start-up with a
// message naming the variable.
func TestCallerConfig(t *testing.T) {
	pub, _, err := eventlog.SubscriberSeed(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, variable string
		vars           map[string]string
	}{
		{"unknown mode", "AUTH_MODE", map[string]string{"AUTH_MODE": "password"}},
		{"keys without policy", "AUTH_POLICY_FILE", map[string]string{"AUTH_MODE": "apikey"}},
		{"policy ignored", "AUTH_POLICY_FILE", map[string]string{"AUTH_MODE": "none", "AUTH_POLICY_FILE": "p.yaml"}},
		{"mtls without TLS", "TLS_CLIENT_CA_FILE", map[string]string{"AUTH_MODE": "mtls", "AUTH_POLICY_FILE": "p.yaml"}},
		{"client CA without mtls", "TLS_CLIENT_CA_FILE", map[string]string{"AUTH_MODE": "apikey", "AUTH_POLICY_FILE": "p.yaml", "TLS_CERT_FILE": "c", "TLS_KEY_FILE": "k", "TLS_CLIENT_CA_FILE": "ca"}},
		{"certificate without key", "TLS_CERT_FILE", map[string]string{"TLS_CERT_FILE": "c"}},
		{"metrics address", "METRICS_ADDR", map[string]string{"METRICS_ADDR": "9090"}},
		{"creds and seed", "NATS_CREDS", map[string]string{"NATS_URL": "nats://x:4222", "NATS_CREDS": "a", "NATS_NKEY_SEED": "b"}},
		{"creds without NATS_URL", "NATS_CREDS", map[string]string{"NATS_CREDS": "a"}},
		{"CA without NATS_URL", "NATS_CA_FILE", map[string]string{"NATS_CA_FILE": "a"}},
		{"client certificate without key", "NATS_CERT_FILE", map[string]string{"NATS_URL": "nats://x:4222", "NATS_CERT_FILE": "a"}},
		{"subscriber seed instead of key", "NATS_SUBSCRIBER_KEY", map[string]string{"NATS_SUBSCRIBER_KEY": "SUAM"}},
		{"subscriber key with NATS_URL", "NATS_SUBSCRIBER_KEY", map[string]string{"NATS_URL": "nats://x:4222", "NATS_SUBSCRIBER_KEY": pub}},
		{"operator account key", "NATS_OPERATOR_KEY", map[string]string{"NATS_OPERATOR_KEY": "A" + pub[1:]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := baseVars(t)
			for k, v := range tc.vars {
				vars[k] = v
			}
			_, err := app.ConfigFromEnv(func(k string) string { return vars[k] })
			if err == nil || !strings.Contains(err.Error(), tc.variable) {
				t.Fatalf("got %v, want an error naming %s", err, tc.variable)
			}
		})
	}
	// The default mode follows what is configured.
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{nil, "none"},
		{map[string]string{"AUTH_POLICY_FILE": "p.yaml"}, "apikey"},
		{map[string]string{"AUTH_POLICY_FILE": "p.yaml", "TLS_CERT_FILE": "c", "TLS_KEY_FILE": "k", "TLS_CLIENT_CA_FILE": "ca"}, "apikey,mtls"},
		{map[string]string{"AUTH_MODE": "mtls", "AUTH_POLICY_FILE": "p.yaml", "TLS_CERT_FILE": "c", "TLS_KEY_FILE": "k", "TLS_CLIENT_CA_FILE": "ca"}, "mtls"},
		{map[string]string{"AUTH_MODE": "mtls,apikey", "AUTH_POLICY_FILE": "p.yaml", "TLS_CERT_FILE": "c", "TLS_KEY_FILE": "k", "TLS_CLIENT_CA_FILE": "ca"}, "apikey,mtls"},
	} {
		cfg, err := app.ConfigFromEnv(func(k string) string { return tc.vars[k] })
		if err != nil || cfg.AuthMode.String() != tc.want {
			t.Errorf("%v: mode %s (%v), want %s", tc.vars, cfg.AuthMode, err, tc.want)
		}
	}
}

// TestTLSEndToEnd: with TLS the port speaks HTTP/2 by ALPN: gRPC, Connect
// and gRPC-Web with an API key, and with a client certificate; HTTP/1.1
// Connect works too; cleartext does not.
func TestTLSEndToEnd(t *testing.T) {
	s := startSecured(t, nil)
	ctx := context.Background()
	for _, protocol := range []string{"grpc", "connect", "grpc-web"} {
		for _, caller := range []string{"login", "cert:issuer"} {
			t.Run(protocol+"/"+caller, func(t *testing.T) {
				cert, authorization := s.split(caller)
				seen := &protoRecorder{next: s.httpClient(t, cert, false).Transport}
				client := tokenv1connect.NewTokenServiceClient(&http.Client{Transport: seen}, s.url, protocolOptions(protocol, authorization)...)
				resp, err := client.GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "tls-user", ClientId: "web", Audience: []string{"api"}}))
				if err != nil {
					t.Fatal(err)
				}
				if resp.Msg.GetAccessToken() == "" {
					t.Fatal("no access token")
				}
				if seen.proto != "HTTP/2.0" {
					t.Fatalf("protocol %q, want HTTP/2.0 by ALPN", seen.proto)
				}
			})
		}
	}
	t.Run("connect over HTTP/1.1", func(t *testing.T) {
		client := tokenv1connect.NewTokenServiceClient(s.httpClient(t, "", true), s.url, protocolOptions("connect", "Bearer "+s.keys["orders-api"])...)
		if _, err := client.IntrospectToken(ctx, connect.NewRequest(&tokenv1.IntrospectTokenRequest{Token: "x"})); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no cleartext on a TLS port", func(t *testing.T) {
		client := tokenv1connect.NewTokenServiceClient(h2cClient(t), "http://"+s.m.Addr(), connect.WithGRPC())
		if _, err := client.GetJWKS(ctx, connect.NewRequest(&tokenv1.GetJWKSRequest{})); err == nil {
			t.Fatal("h2c accepted on the TLS port")
		}
	})
	t.Run("metrics listener", func(t *testing.T) {
		body := get(t, http.DefaultClient, "http://"+s.m.MetricsAddr()+"/metrics", "")
		if !strings.Contains(body, "token_service_tokens_issued_total") {
			t.Fatal("metrics listener serves no token_service_ metric")
		}
		// Not on the main port any more, even for an admin.
		if got := s.get(t, "/metrics", "ops", false); got != "404" {
			t.Fatalf("/metrics on the main port for an admin: %s, want 404", got)
		}
	})
}

// protoRecorder records the protocol of the last response.
type protoRecorder struct {
	next  http.RoundTripper
	proto string
}

func (p *protoRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := p.next.RoundTrip(r)
	if err == nil {
		p.proto = resp.Proto
	}
	return resp, err
}

// TestMTLSOnly: AUTH_MODE=mtls refuses API keys the policy holds and
// admits certificates.
func TestMTLSOnly(t *testing.T) {
	s := startSecured(t, map[string]string{"AUTH_MODE": "mtls"})
	ctx := context.Background()
	req := func() *connect.Request[tokenv1.ListSigningKeysRequest] {
		return connect.NewRequest(&tokenv1.ListSigningKeysRequest{})
	}
	if _, err := s.client(t, "grpc", "ops").ListSigningKeys(ctx, req()); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("admin API key with AUTH_MODE=mtls: %v, want unauthenticated", err)
	}
	if _, err := s.client(t, "grpc", "cert:admin").ListSigningKeys(ctx, req()); err != nil {
		t.Fatalf("admin certificate: %v", err)
	}
}

// TestCertificateReload: replacing the certificate files changes the
// certificate of new handshakes without a restart; Reload (SIGHUP) does
// it at once; a broken pair keeps the previous certificate.
func TestCertificateReload(t *testing.T) {
	s := startSecured(t, nil)
	served := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", s.m.Addr(), authtest.ClientTLS(s.ca, nil))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := served()
	replace := func(c *authtest.Cert) {
		t.Helper()
		tmpCert, tmpKey := c.WriteFiles(t, t.TempDir(), "next")
		for from, to := range map[string]string{tmpCert: filepath.Join(s.dir, "server.crt"), tmpKey: filepath.Join(s.dir, "server.key")} {
			b, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(to+".tmp", b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(to+".tmp", to); err != nil {
				t.Fatal(err)
			}
		}
	}
	next := s.ca.ServerCert(t)
	replace(next)
	waitFor(t, "new certificate served", func() bool { return served() == next.Leaf.SerialNumber.String() })
	if served() == first {
		t.Fatal("still the first certificate")
	}
	// Calls keep working on the new certificate.
	if _, err := s.client(t, "grpc", "cert:issuer").GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "u", ClientId: "web", Audience: []string{"api"}})); err != nil {
		t.Fatal(err)
	}
	// SIGHUP's Reload applies a change at once.
	third := s.ca.ServerCert(t)
	replace(third)
	if err := s.m.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != third.Leaf.SerialNumber.String() {
		t.Fatalf("after Reload: serial %s, want %s", got, third.Leaf.SerialNumber)
	}
	// A certificate with another key's pair does not load.
	if err := os.WriteFile(filepath.Join(s.dir, "server.key"), s.ca.ServerCert(t).KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.m.Reload(); err == nil || !strings.Contains(err.Error(), "TLS_CERT_FILE") {
		t.Fatalf("Reload of a mismatched pair: %v", err)
	}
	if got := served(); got != third.Leaf.SerialNumber.String() {
		t.Fatalf("after a bad pair: serial %s, want the previous %s", got, third.Leaf.SerialNumber)
	}
}

// TestPolicyReload: a key added to the policy file works without a
// restart; a broken file keeps the policy in force (and Reload says so).
func TestPolicyReload(t *testing.T) {
	s := startSecured(t, nil)
	ctx := context.Background()
	introspect := func(caller string) error {
		_, err := s.client(t, "grpc", caller).IntrospectToken(ctx, connect.NewRequest(&tokenv1.IntrospectTokenRequest{Token: "x"}))
		return err
	}
	added := append(append([]struct{ name, fields string }(nil), policyEntries...), struct{ name, fields string }{"billing-api", "    roles: [resource-server]\n"})
	keys := writePolicy(t, s.policy, added, policyMTLS)
	newKey := "key:" + keys["billing-api"]
	waitFor(t, "the added key works", func() bool { return introspect(newKey) == nil })
	if err := introspect("key:" + keys["orders-api"]); err != nil {
		t.Fatalf("a key kept in the file: %v", err)
	}
	if err := introspect("orders-api"); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("a key replaced in the file: %v, want unauthenticated", err)
	}
	if err := os.WriteFile(s.policy, []byte("api_keys:\n  - name: broken\n    roles: [root]\n"+auth.EndMarker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the broken file reported", func() bool { return strings.Contains(s.logs.String(), "caller policy not reloaded") })
	if err := introspect(newKey); err != nil {
		t.Fatalf("after a broken file: %v", err)
	}
	if err := s.m.Reload(); err == nil || !strings.Contains(err.Error(), "AUTH_POLICY_FILE") {
		t.Fatalf("Reload of a broken file: %v", err)
	}
	if err := introspect(newKey); err != nil {
		t.Fatalf("after a forced reload of a broken file: %v", err)
	}
}

// TestActorInAuditLog: an event caused by an authenticated caller carries
// its identity, in the record and in tokenctl audit (run as an operator of
// the embedded server, whose log anonymous connections cannot read).
func TestActorInAuditLog(t *testing.T) {
	opPub, opSeed, err := eventlog.SubscriberSeed(t.TempDir()) // any user nkey
	if err != nil {
		t.Fatal(err)
	}
	s := startSecured(t, map[string]string{"NATS_OPERATOR_KEY": opPub})
	ctx := context.Background()
	resp, err := s.client(t, "connect", "login").GenerateTokens(ctx, withCorrelation(&tokenv1.GenerateTokensRequest{Subject: "audited", ClientId: "web", Audience: []string{"api"}}, "actor-issue"))
	if err != nil {
		t.Fatal(err)
	}
	fid := resp.Msg.GetFamilyId()
	if _, err := s.client(t, "grpc", "cert:issuer").RevokeToken(ctx, withCorrelation(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: fid}}, "actor-revoke")); err != nil {
		t.Fatal(err)
	}
	subj := s.m.Log.Subjects()
	for event, want := range map[string]string{"issued": "apikey:login", "revoked": "mtls:" + issuerURI} {
		rec, err := s.m.Log.LastConsistent(ctx, subj.Family(fid, event))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Actor != want {
			t.Fatalf("%s: actor %q, want %q", event, rec.Actor, want)
		}
	}

	// Without credentials the embedded server lets nobody in.
	if nc, err := nats.Connect(s.m.SubscriberURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("anonymous NATS connection accepted with authenticated callers")
	}
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		vars := map[string]string{"NATS_URL": s.m.SubscriberURL(), "NATS_NKEY_SEED": opSeed}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		code := ctl.Run(cctx, args, func(k string) string { return vars[k] }, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, stderr := run("--json", "audit", "family", fid)
	if code != 0 {
		t.Fatalf("audit: exit %d: %s", code, stderr)
	}
	var actors []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var step map[string]any
		if err := json.Unmarshal([]byte(line), &step); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		actors = append(actors, step["actor"].(string)+" "+step["correlation_id"].(string))
	}
	if want := []string{"apikey:login actor-issue", "mtls:" + issuerURI + " actor-revoke"}; strings.Join(actors, "|") != strings.Join(want, "|") {
		t.Fatalf("audit actors %q, want %q", actors, want)
	}
	code, out, _ = run("audit", "family", fid)
	if code != 0 || !strings.Contains(out, "apikey:login") || !strings.Contains(out, "mtls:"+issuerURI) {
		t.Fatalf("readable audit (exit %d):\n%s", code, out)
	}

	// The commands that ask tokend need an admin credential over TLS.
	caFile := s.ca.WriteFile(t, t.TempDir(), "ca.pem")
	keyFile := filepath.Join(t.TempDir(), "ops.key")
	if err := os.WriteFile(keyFile, []byte(s.keys["ops"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	service := []string{"--service", s.url, "--tokend-ca", caFile}
	if code, _, stderr := run(append(service, "replay", "--verify")...); code != 1 || !strings.Contains(stderr, "401") {
		t.Fatalf("replay --verify without a key: exit %d: %s", code, stderr)
	}
	if code, out, stderr := run(append(service, "--api-key-file", keyFile, "replay", "--verify")...); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("replay --verify as admin: exit %d: %s%s", code, out, stderr)
	}
	certFile, certKey := s.certs["admin"].WriteFiles(t, t.TempDir(), "admin")
	if code, out, stderr := run(append(service, "--tokend-cert", certFile, "--tokend-key", certKey, "keys", "rotate")...); code != 0 || !strings.Contains(out, "new key") {
		t.Fatalf("keys rotate with the admin certificate: exit %d: %s%s", code, out, stderr)
	}
	rec, err := s.m.Log.LastConsistent(ctx, subj.Keys())
	if err != nil || rec.Actor != "mtls:"+adminCN {
		t.Fatalf("rotation's actor %q (%v), want mtls:%s", rec.Actor, err, adminCN)
	}
}

func withCorrelation[T any](msg *T, id string) *connect.Request[T] {
	r := connect.NewRequest(msg)
	r.Header().Set("X-Correlation-Id", id)
	return r
}

// TestSubscriberUser: through tokend's embedded server, with the seed
// tokend generated, the subscriber user cannot publish a revocation,
// cannot read DPoP or grace subjects, and receives revocations with the
// projections/subscriber package and tokenctl revocations watch.
func TestSubscriberUser(t *testing.T) {
	s := startSecured(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seed := s.m.SubscriberSeedFile()
	if fi, err := os.Stat(seed); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed file %s: %v, %v", seed, fi, err)
	}
	if s.m.FeedStream() != eventlog.DefaultFeedStream {
		t.Fatalf("feed %q", s.m.FeedStream())
	}
	opt, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := subscriber.ConsumerName(seed)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	nc, err := nats.Connect(s.m.SubscriberURL(), opt, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	subj := s.m.Log.Subjects()
	violation := func(what string) {
		t.Helper()
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("%s: %v, want a permissions violation", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no permissions violation", what)
		}
	}

	t.Run("cannot publish a revocation", func(t *testing.T) {
		before := lastSeq(t, s.m)
		for _, subject := range []string{subj.Family("X", "revoked"), subj.SubjectRevoked("X"), "tokenfeed.family.X.revoked", "$JS.API.STREAM.PURGE." + s.m.FeedStream()} {
			if err := nc.Publish(subject, []byte("{}")); err != nil {
				t.Fatal(err)
			}
			_ = nc.Flush()
			violation("publish " + subject)
		}
		if _, err := s.m.Log.Last(ctx, subj.FamilyFilter("X")); !errors.Is(err, eventlog.ErrNotFound) {
			t.Fatalf("the log holds a family X: %v", err)
		}
		if after := lastSeq(t, s.m); after != before {
			t.Fatalf("%d events appended", after-before)
		}
	})

	// Something to hide: a DPoP jti claim and a grace record, made by
	// tokend itself.
	if _, err := s.m.Log.Append(ctx, eventlog.Event{Subject: subj.DPoP("jkt", "h1"), Type: "dpop.proof_used", Data: []byte("p")}, eventlog.Expect{Filter: subj.DPoP("jkt", "h1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.m.Log.Append(ctx, eventlog.Event{Subject: subj.Grace("f1", "g1"), Type: "grace", Data: []byte("g")}, eventlog.Expect{Filter: subj.Grace("f1", "g1")}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("cannot read DPoP or grace subjects", func(t *testing.T) {
		for _, filter := range []string{subj.Prefix() + ".dpop.>", subj.Prefix() + ".grace.>"} {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := js.CreateConsumer(cctx, s.m.Config.Stream, jetstream.ConsumerConfig{FilterSubject: filter})
			cancel()
			if err == nil {
				t.Fatalf("consumer on %s of the log created", filter)
			}
			violation("consumer on " + filter)
			// On the feed, through the consumer named after the key:
			// allowed, and the feed has no such subjects.
			cons, err := js.CreateConsumer(ctx, s.m.FeedStream(), jetstream.ConsumerConfig{Name: pub, FilterSubject: filter, AckPolicy: jetstream.AckNonePolicy})
			if err != nil {
				t.Fatal(err)
			}
			if info, err := cons.Info(ctx); err != nil || info.NumPending != 0 {
				t.Fatalf("feed consumer on %s: %d pending, %v", filter, info.NumPending, err)
			}
			if err := js.DeleteConsumer(ctx, s.m.FeedStream(), pub); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("receives revocations", func(t *testing.T) {
		got := make(chan subscriber.Revocation, 16)
		sub, err := subscriber.New(nc, subscriber.Config{Stream: s.m.FeedStream(), Consumer: pub, OnRevocation: func(r subscriber.Revocation) { got <- r }})
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = sub.Run(rctx) }()
		defer func() { stop(); <-done }()
		select {
		case <-sub.Ready():
		case <-ctx.Done():
			t.Fatal("subscriber not ready")
		}
		resp, err := s.client(t, "grpc", "login").GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "watched", ClientId: "web", Audience: []string{"api"}}))
		if err != nil {
			t.Fatal(err)
		}
		fid := resp.Msg.GetFamilyId()
		claims := subscriber.Claims{Subject: "watched", FamilyID: fid, IssuedAt: time.Now().Truncate(time.Second)}
		if sub.IsRevoked(claims) {
			t.Fatal("revoked before the revocation")
		}
		if _, err := s.client(t, "grpc", "login").RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_RefreshToken{RefreshToken: resp.Msg.GetRefreshToken()}})); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-got:
			if r.FamilyID != fid || r.Subject != "watched" || r.Reason != "client" {
				t.Fatalf("revocation %+v", r)
			}
		case <-ctx.Done():
			t.Fatal("revocation not received")
		}
		if !sub.IsRevoked(claims) {
			t.Fatal("IsRevoked false after the revocation")
		}

		// tokenctl with the subscriber's seed and the feed stream. One key
		// has one consumer: the subscriber above lets go of it first (two
		// readers of one key take the consumer from each other).
		stop()
		<-done
		var out, errOut bytes.Buffer
		vars := map[string]string{"NATS_URL": s.m.SubscriberURL(), "NATS_NKEY_SEED": seed, "NATS_STREAM": s.m.FeedStream()}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		code := ctl.Run(wctx, []string{"--json", "revocations", "watch", "--from-seq", "0", "--since", "1h"}, func(k string) string { return vars[k] }, &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), `"family_id":"`+fid+`"`) {
			t.Fatalf("tokenctl revocations watch (exit %d): %s\n%s", code, out.String(), errOut.String())
		}
		// Without --stream the subscriber is told where to look.
		vars["NATS_STREAM"] = ""
		out.Reset()
		errOut.Reset()
		if code := ctl.Run(ctx, []string{"revocations", "watch"}, func(k string) string { return vars[k] }, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "--stream "+eventlog.DefaultFeedStream) {
			t.Fatalf("watch on the log as a subscriber (exit %d): %s", code, errOut.String())
		}
	})
}

// TestExternalNATSCredentials: tokend reaches an external NATS over TLS
// with a client certificate and an nkey (NATS_URL, NATS_NKEY_SEED,
// NATS_CA_FILE, NATS_CERT_FILE, NATS_KEY_FILE); without the nkey it is
// refused.
func TestExternalNATSCredentials(t *testing.T) {
	dir := t.TempDir()
	ca := authtest.NewCA(t, "NATS CA")
	srvCert := ca.ServerCert(t)
	userPub, userSeed, err := eventlog.SubscriberSeed(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "js"), NoLog: true, NoSigs: true,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert.TLS}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
		TLS:       true, TLSVerify: true, TLSTimeout: 5,
		Nkeys: []*server.NkeyUser{{Nkey: userPub}},
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	clientCert, clientKey := ca.ClientCN(t, "tokend").WriteFiles(t, dir, "nats-client")
	vars := baseVars(t)
	for k, v := range map[string]string{
		"NATS_URL": ns.ClientURL(), "NATS_REPLICAS": "1", "NATS_NKEY_SEED": userSeed,
		"NATS_CA_FILE": ca.WriteFile(t, dir, "nats-ca.pem"), "NATS_CERT_FILE": clientCert, "NATS_KEY_FILE": clientKey,
	} {
		vars[k] = v
	}
	m := startApp(t, vars, nil)
	client := tokenv1connect.NewTokenServiceClient(h2cClient(t), "http://"+m.Addr(), connect.WithGRPC())
	if _, err := client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "ext", ClientId: "web", Audience: []string{"api"}})); err != nil {
		t.Fatal(err)
	}
	if m.SubscriberSeedFile() != "" {
		t.Fatal("subscriber accounts made for an external NATS")
	}
	// The feed is in tokend's account there.
	if _, err := m.Log.JetStream().Stream(context.Background(), m.FeedStream()); err != nil || m.FeedStream() != eventlog.DefaultFeedStream {
		t.Fatalf("feed %q on the external NATS: %v", m.FeedStream(), err)
	}

	// Without the nkey the server refuses tokend.
	delete(vars, "NATS_NKEY_SEED")
	vars["DATA_DIR"] = t.TempDir()
	cfg, err := app.ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if m2, err := app.Start(ctx, cfg, discardLogger()); err == nil {
		_ = m2.Close(context.Background())
		t.Fatal("started without NATS credentials")
	}
}
