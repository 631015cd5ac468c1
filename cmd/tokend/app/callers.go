package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	"github.com/auth-platform/tokenservice/rpc/auth"
)

// AuthMode says how callers of the RPC port authenticate: with API keys,
// with client certificates (mTLS), with either, or not at all (the zero
// value, AUTH_MODE=none, allowed only on loopback).
type AuthMode struct {
	APIKey bool
	MTLS   bool
}

// None reports whether callers are not authenticated.
func (m AuthMode) None() bool { return !m.APIKey && !m.MTLS }

// String returns the AUTH_MODE value of m: none, apikey, mtls or
// apikey,mtls.
func (m AuthMode) String() string {
	switch {
	case m.APIKey && m.MTLS:
		return "apikey,mtls"
	case m.APIKey:
		return "apikey"
	case m.MTLS:
		return "mtls"
	}
	return "none"
}

// ParseAuthMode parses an AUTH_MODE value: none, or a comma-separated
// list of apikey and mtls.
func ParseAuthMode(s string) (AuthMode, error) {
	var m AuthMode
	if strings.TrimSpace(s) == "none" {
		return m, nil
	}
	for _, part := range strings.Split(s, ",") {
		switch strings.TrimSpace(part) {
		case "apikey":
			m.APIKey = true
		case "mtls":
			m.MTLS = true
		default:
			return AuthMode{}, fmt.Errorf("%q is not none, apikey, mtls or apikey,mtls", s)
		}
	}
	return m, nil
}

// CallerConfig is the part of Config that decides who may reach tokend:
// caller authentication on the RPC port, its TLS, the metrics listener,
// and the credentials of the NATS connections. Variables documents each
// variable.
type CallerConfig struct {
	// AuthMode is how callers authenticate (AUTH_MODE).
	AuthMode AuthMode
	// AuthPolicyFile is the caller policy (AUTH_POLICY_FILE; see
	// auth.PolicyFile), reloaded when it changes and on SIGHUP.
	AuthPolicyFile string
	// TLSCertFile and TLSKeyFile serve TLS on the port, reloaded when they
	// change; empty serves h2c (loopback development).
	TLSCertFile string
	TLSKeyFile  string
	// TLSClientCAFile verifies client certificates (AUTH_MODE mtls).
	TLSClientCAFile string
	// MetricsAddr, if set, serves /metrics on a listener of its own
	// (plain HTTP, no authentication) instead of the main port.
	MetricsAddr string
	// NATSCredsFile, NATSNkeySeedFile, NATSCAFile, NATSCertFile and
	// NATSKeyFile authenticate tokend to an external NATS (NATS_URL) and
	// verify it.
	NATSCredsFile    string
	NATSNkeySeedFile string
	NATSCAFile       string
	NATSCertFile     string
	NATSKeyFile      string
	// NATSSubscriberKeys are the public nkeys of the embedded server's
	// subscriber users; empty: one generated, its seed in DATA_DIR.
	NATSSubscriberKeys []string
	// NATSOperatorKeys are the public nkeys of operators (tokenctl) with
	// full access to the embedded server's log.
	NATSOperatorKeys []string
	// NATSAllowAnonymousAppend starts tokend even though a client without
	// credentials can append to the log of NATS_URL (a loopback one only).
	NATSAllowAnonymousAppend bool
}

// composeCallers derives AUTH_MODE's default and checks the caller
// settings against each other; vars.go parses each. Whether the result
// exposes the service is Start's decision (checkExposure), so that a
// Config built in code is held to it too.
func (r *reading) composeCallers(errs *envvar.Errors) {
	c := &r.c
	// The default follows what is configured: a policy file means API
	// keys, a client CA means certificates too; nothing means none.
	mode := AuthMode{APIKey: c.AuthPolicyFile != "", MTLS: c.AuthPolicyFile != "" && c.TLSClientCAFile != ""}
	if r.authMode != nil {
		mode = *r.authMode
	}
	c.AuthMode = mode
	switch {
	case mode.None() && c.AuthPolicyFile != "":
		errs.Fail("AUTH_POLICY_FILE", "is set but AUTH_MODE=none ignores it (set AUTH_MODE=apikey, mtls or apikey,mtls)")
	case !mode.None() && c.AuthPolicyFile == "":
		errs.Fail("AUTH_POLICY_FILE", "AUTH_MODE="+mode.String()+" needs the policy file that lists the callers")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs.Fail("TLS_CERT_FILE", "TLS_CERT_FILE and TLS_KEY_FILE go together")
	}
	if mode.MTLS && (c.TLSClientCAFile == "" || c.TLSCertFile == "") {
		errs.Fail("TLS_CLIENT_CA_FILE", "AUTH_MODE="+mode.String()+" needs TLS_CERT_FILE, TLS_KEY_FILE and TLS_CLIENT_CA_FILE (client certificates are verified in the TLS handshake)")
	}
	if !mode.MTLS && c.TLSClientCAFile != "" {
		errs.Fail("TLS_CLIENT_CA_FILE", "is set but AUTH_MODE="+mode.String()+" does not authenticate client certificates (add mtls)")
	}

	if c.NATSCredsFile != "" && c.NATSNkeySeedFile != "" {
		errs.Fail("NATS_CREDS", "NATS_CREDS and NATS_NKEY_SEED are two ways to authenticate: set one")
	}
	if (c.NATSCertFile == "") != (c.NATSKeyFile == "") {
		errs.Fail("NATS_CERT_FILE", "NATS_CERT_FILE and NATS_KEY_FILE go together")
	}
	for _, v := range []struct{ name, value string }{
		{"NATS_CREDS", c.NATSCredsFile}, {"NATS_NKEY_SEED", c.NATSNkeySeedFile},
		{"NATS_CA_FILE", c.NATSCAFile}, {"NATS_CERT_FILE", c.NATSCertFile},
	} {
		if v.value != "" && c.NATSURL == "" {
			errs.Fail(v.name, "is for an external NATS (NATS_URL); the embedded server authenticates tokend itself")
		}
	}
	if c.NATSAllowAnonymousAppend {
		if u, err := url.Parse(c.NATSURL); c.NATSURL == "" || err != nil || !auth.IsLoopback(context.Background(), nil, u.Hostname()) {
			errs.Fail("NATS_INSECURE_ALLOW_ANONYMOUS_APPEND", "is only for a development NATS_URL on loopback (the embedded server never lets anonymous clients append)")
		}
	}
	if c.NATSURL != "" && (len(c.NATSSubscriberKeys) > 0 || len(c.NATSOperatorKeys) > 0) {
		errs.Fail("NATS_SUBSCRIBER_KEY", "NATS_SUBSCRIBER_KEY and NATS_OPERATOR_KEY configure the embedded server; with NATS_URL, users are your cluster's")
	}
}

// checkExposure refuses a configuration in which something reachable from
// outside the machine has no authentication: the RPC port with
// AUTH_MODE=none on a non-loopback HOST, or the embedded NATS server,
// which lets connections without credentials at the log in that mode, on
// a non-loopback NATS_LISTEN.
func (c Config) checkExposure(ctx context.Context) error {
	if !c.AuthMode.None() {
		return nil
	}
	if !auth.IsLoopback(ctx, nil, c.Host) {
		return fmt.Errorf("AUTH_MODE: refusing to start: HOST=%s is not a loopback address and callers are not authenticated (AUTH_MODE=none, no AUTH_POLICY_FILE), "+
			"so anyone who reaches the port could mint tokens for any subject, rotate the signing keys and revoke every session. "+
			"Set AUTH_POLICY_FILE (API keys, AUTH_MODE=apikey) and/or TLS_CERT_FILE, TLS_KEY_FILE and TLS_CLIENT_CA_FILE (client certificates, AUTH_MODE=mtls), "+
			"or bind HOST=127.0.0.1 for development", c.Host)
	}
	if c.NATSURL == "" && !auth.IsLoopback(ctx, nil, c.NATSListen) {
		return fmt.Errorf("AUTH_MODE: refusing to start: NATS_LISTEN=%s is not a loopback address, and with AUTH_MODE=none the embedded NATS server lets connections without credentials read and append to the event log. "+
			"Authenticate callers (AUTH_POLICY_FILE) or keep NATS_LISTEN on 127.0.0.1", c.NATSListen)
	}
	return nil
}

// callers holds the running parts of CallerConfig: the guard, the policy
// and certificate reloaders (their watchers run in Main's group), and the
// metrics listener.
type callers struct {
	guard     *auth.Guard
	policy    *auth.Policy       // nil with AUTH_MODE=none
	certs     *auth.CertReloader // nil without TLS
	tls       *tls.Config        // nil without TLS
	accounts  *eventlog.Accounts // the embedded server's, nil with NATS_URL
	seedFile  string             // the generated subscriber seed, if any
	metricsLn net.Listener
}

// setupCallers refuses an exposed configuration (checkExposure), loads the
// policy and the certificates and makes the guard; their watchers run in
// Main's group until Close.
func (m *Main) setupCallers(ctx context.Context) error {
	cfg, c := m.Config, &m.callers
	if err := cfg.checkExposure(ctx); err != nil {
		return err
	}
	var err error
	if cfg.TLSCertFile != "" {
		if c.certs, err = auth.NewCertReloader(cfg.TLSCertFile, cfg.TLSKeyFile, m.Logger); err != nil {
			return fmt.Errorf("TLS_CERT_FILE: %w", err)
		}
		var clientCAs *x509.CertPool // nil: no client certificate asked for
		if cfg.AuthMode.MTLS {
			if clientCAs, err = auth.LoadCertPool(cfg.TLSClientCAFile); err != nil {
				return fmt.Errorf("TLS_CLIENT_CA_FILE: %w", err)
			}
		}
		c.tls = auth.ServerTLSConfig(c.certs, clientCAs, false)
		m.group.Go("TLS certificate watcher", watchEvery(c.certs.Watch, 0), nil)
	}
	if cfg.AuthMode.None() {
		m.Logger.Warn("AUTH_MODE=none: callers are not authenticated and may call every RPC, the admin ones included; allowed only because HOST is loopback. Set AUTH_POLICY_FILE before binding anywhere else",
			"host", cfg.Host)
		c.guard, err = auth.New(auth.Config{Disabled: true, Logger: m.Logger})
		return err
	}
	if c.policy, err = auth.LoadPolicy(cfg.AuthPolicyFile, m.Logger); err != nil {
		return fmt.Errorf("AUTH_POLICY_FILE: %w", err)
	}
	m.group.Go("caller policy watcher", watchEvery(c.policy.Watch, 0), nil)
	c.guard, err = auth.New(auth.Config{Policy: c.policy, RefuseAPIKeys: !cfg.AuthMode.APIKey, Observer: refusals{m}, Logger: m.Logger,
		AssertionReplay: assertionReplay{m}})
	if err != nil {
		return err
	}
	if c.tls == nil && cfg.AuthMode.APIKey && !auth.IsLoopback(ctx, nil, cfg.Host) {
		m.Logger.Warn("API keys reach this port in clear text: set TLS_CERT_FILE and TLS_KEY_FILE unless a proxy or mesh in front of tokend terminates TLS", "host", cfg.Host)
	}
	m.Logger.Info("callers authenticated", "auth_mode", cfg.AuthMode.String(), "policy_file", cfg.AuthPolicyFile, "tls", c.tls != nil)
	return nil
}

// refusals counts refused calls in the metrics, which exist once the
// service serves (they are made after the guard).
type refusals struct{ m *Main }

func (r refusals) Refused(procedure string, reason auth.Reason) {
	r.m.Metrics.Refused(procedure, reason)
}

// serveMetrics starts the METRICS_ADDR listener, if configured.
func (m *Main) serveMetrics() error {
	if m.Config.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", m.Config.MetricsAddr)
	if err != nil {
		return fmt.Errorf("listen on METRICS_ADDR %s: %w", m.Config.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Metrics.Handler())
	m.callers.metricsLn = ln
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
	m.group.Go("metrics listener", func(context.Context) error { return served(srv.Serve(ln)) }, srv.Shutdown)
	m.Logger.Info("serving metrics", "addr", ln.Addr().String())
	return nil
}

// provisionFeed creates or updates the subscribers' stream, the feed
// (after the log's stream exists), and returns the JetStream of the
// account that holds it: on the embedded server, the subscribers' account,
// reached as its admin user; with NATS_URL, tokend's own account (give
// subscribers an account that may read only the feed).
func (m *Main) provisionFeed(ctx context.Context) (jetstream.JetStream, error) {
	acc := m.callers.accounts
	if acc == nil {
		js := m.Log.JetStream()
		want := eventlog.FeedStreamConfig(m.FeedStream(), m.Config.SubjectPrefix, m.Log.Replicas())
		if err := m.Log.Provision(ctx, func(ctx context.Context) error { return eventlog.EnsureFeed(ctx, js, want) }); err != nil {
			return nil, err
		}
		return js, nil
	}
	if err := acc.ProvisionFeed(ctx, m.embedded); err != nil {
		return nil, err
	}
	nc, err := acc.ConnectFeed(m.embedded)
	if err != nil {
		return nil, err
	}
	m.feedConn = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("feed: jetstream: %w", err)
	}
	attrs := []any{"url", m.embedded.ClientURL(), "stream", acc.FeedStream()}
	if m.callers.seedFile != "" {
		name, err := subscriber.ConsumerName(m.callers.seedFile)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, "seed_file", m.callers.seedFile, "consumer", name)
	}
	m.Logger.Info("NATS subscribers read public revocations and key events with a subscriber nkey, through the consumer named after its public key", attrs...)
	return js, nil
}

// Reload reads the caller policy and the TLS certificate files again (on
// SIGHUP). What does not load is reported, and the previous policy or
// certificate stays in force.
func (m *Main) Reload() error {
	var errs []error
	if p := m.callers.policy; p != nil {
		if err := p.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("AUTH_POLICY_FILE: %w", err))
		}
	}
	if c := m.callers.certs; c != nil {
		if err := c.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("TLS_CERT_FILE: %w", err))
		}
	}
	return errors.Join(errs...)
}

// MetricsAddr returns the address of the METRICS_ADDR listener, or "".
func (m *Main) MetricsAddr() string {
	if m.callers.metricsLn == nil {
		return ""
	}
	return m.callers.metricsLn.Addr().String()
}

// SubscriberSeedFile returns the file of the generated subscriber nkey
// seed of the embedded server ("" with NATS_SUBSCRIBER_KEY or NATS_URL).
func (m *Main) SubscriberSeedFile() string { return m.callers.seedFile }

// FeedStream returns the stream subscribers read, the feed (TOKENS_FEED):
// in the embedded server's subscribers' account, or with NATS_URL in
// tokend's own account.
func (m *Main) FeedStream() string {
	if m.callers.accounts == nil {
		return eventlog.DefaultFeedStream
	}
	return m.callers.accounts.FeedStream()
}

// embeddedAccounts returns the accounts of the embedded server: the
// service's user, derived from the encryption key (and its previous keys),
// the subscriber users (a generated seed in DATA_DIR unless
// NATS_SUBSCRIBER_KEY), the operators, and, with AUTH_MODE=none,
// connections without credentials let in as subscribers.
func (m *Main) embeddedAccounts(key []byte) (*eventlog.Accounts, error) {
	cfg := m.Config
	keys := cfg.NATSSubscriberKeys
	if len(keys) == 0 {
		pub, path, err := eventlog.SubscriberSeed(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		keys, m.callers.seedFile = []string{pub}, path
	}
	acc, err := eventlog.NewAccounts(eventlog.AccountsConfig{
		Stream: cfg.Stream, Prefix: cfg.SubjectPrefix, SubscriberKeys: keys,
		OperatorKeys: cfg.NATSOperatorKeys, Anonymous: cfg.AuthMode.None(),
		ServiceSecrets: append([][]byte{key}, cfg.PreviousKeys...),
	})
	if err != nil {
		return nil, err
	}
	m.callers.accounts = acc
	return acc, nil
}

// natsOptions returns the credentials and TLS options of the connection
// to an external NATS: NATS_CREDS, NATS_NKEY_SEED, or else the service's
// nkey derived from key (the ENCRYPTION_KEY).
func natsOptions(cfg Config, key []byte) ([]nats.Option, error) {
	opts := natsTLSOptions(cfg)
	switch {
	case cfg.NATSCredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.NATSCredsFile))
	case cfg.NATSNkeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(cfg.NATSNkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY_SEED: %w", err)
		}
		opts = append(opts, opt)
	default:
		kp, err := eventlog.ServiceKey(key)
		if err != nil {
			return nil, err
		}
		opts = append(opts, eventlog.NkeyOption(kp))
	}
	if cfg.NATSCertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.NATSCertFile, cfg.NATSKeyFile))
	}
	return opts, nil
}

// natsTLSOptions returns how the connection to an external NATS verifies
// the servers: what a client without credentials would use too.
func natsTLSOptions(cfg Config) []nats.Option {
	if cfg.NATSCAFile != "" {
		return []nats.Option{nats.RootCAs(cfg.NATSCAFile)}
	}
	return nil
}

// openServerOptions handles a NATS_URL server without any authentication:
// it has no nonce for the derived nkey, so the connection would fail with
// nats.ErrNkeysNotSupported, over and over. tokend refuses such a server
// (anyone can append), or connects without credentials with
// NATS_INSECURE_ALLOW_ANONYMOUS_APPEND. A server it cannot reach yet keeps
// opts: the connection retries. A server that refuses the credentials stops
// the start with an error that names them.
func (m *Main) openServerOptions(opts []nats.Option) ([]nats.Option, error) {
	cfg := m.Config
	nc, err := nats.Connect(cfg.NATSURL, append(opts, nats.Name("tokend-auth-check"), nats.Timeout(5*time.Second), nats.NoReconnect())...)
	if err == nil {
		nc.Close()
		return opts, nil
	}
	if errors.Is(err, nats.ErrAuthorization) {
		cred := "the nkey derived from ENCRYPTION_KEY (tokenctl nats service-key prints its public key)"
		switch {
		case cfg.NATSCredsFile != "":
			cred = "NATS_CREDS"
		case cfg.NATSNkeySeedFile != "":
			cred = "NATS_NKEY_SEED"
		}
		return nil, fmt.Errorf("NATS_URL: the server refused tokend's credentials, %s: %w", cred, err)
	}
	if !errors.Is(err, nats.ErrNkeysNotSupported) || cfg.NATSCredsFile != "" || cfg.NATSNkeySeedFile != "" {
		return opts, nil // not reachable yet: the connection retries
	}
	if !cfg.NATSAllowAnonymousAppend {
		return nil, fmt.Errorf("NATS: refusing to start: %w: the server at NATS_URL authenticates no client (no users, no accounts), so a NATS client without credentials can append to the event log: anyone who reaches it could mint tokens and revive spent refresh tokens. "+
			"Give it accounts and users (deploy/ has configurations; tokenctl nats service-key prints tokend's public nkey), or, for a throwaway development server on loopback only, set NATS_INSECURE_ALLOW_ANONYMOUS_APPEND=true", eventlog.ErrOpenLog)
	}
	return natsTLSOptions(cfg), nil
}

// checkLogClosed refuses to run on a NATS server whose log a client
// without credentials can append to (eventlog.ProbeAnonymousAppend), unless
// NATS_INSECURE_ALLOW_ANONYMOUS_APPEND allows it on loopback.
func (m *Main) checkLogClosed(ctx context.Context) error {
	url, opts := m.Config.NATSURL, natsTLSOptions(m.Config)
	if m.embedded != nil {
		url, opts = m.embedded.ClientURL(), nil
	}
	err := m.Log.ProbeAnonymousAppend(ctx, url, opts...)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, eventlog.ErrOpenLog):
		return fmt.Errorf("NATS: checking that anonymous clients cannot append: %w", err)
	case m.Config.NATSAllowAnonymousAppend:
		m.Logger.Warn("NATS_INSECURE_ALLOW_ANONYMOUS_APPEND: anyone who reaches this NATS server can append to the event log, and so mint tokens and revoke sessions; events without the service's MAC are refused, but an attacker can still freeze any family. Development only", "nats_url", url)
		return nil
	}
	return fmt.Errorf("NATS: refusing to start: %w. Anyone who reaches %s could append events (mint tokens, revive spent refresh tokens, publish signing keys). "+
		"Give the NATS server accounts or users with permissions so that only tokend's user may publish to %s.> (deploy/ has configurations), "+
		"or, for a throwaway development server on loopback only, set NATS_INSECURE_ALLOW_ANONYMOUS_APPEND=true", err, url, m.Config.SubjectPrefix)
}

// assertionReplay claims the jti of each private_key_jwt client assertion
// in the log (dpop.LogReplayStore), which opens after the guard is made
// and before any request is served.
type assertionReplay struct{ m *Main }

func (a assertionReplay) Claim(ctx context.Context, jkt, jti string, ttl time.Duration) error {
	return dpop.LogReplayStore{Log: a.m.Log}.Claim(ctx, jkt, jti, ttl)
}

// warnPublicURL says at start what PUBLIC_BASE_URL leaves undone: unset
// off loopback, the metadata and the OAuth endpoints answer 404; set, an
// access token's iss (JWT_ISSUER) other than the metadata's issuer fails
// resource servers that compare them (RFC 9068 §4, RFC 8414 §3.3).
func (m *Main) warnPublicURL(ctx context.Context) {
	cfg := m.Config
	base, ok := cfg.PublicURL.Base(nil)
	switch {
	case !ok && !auth.IsLoopback(ctx, nil, cfg.Host):
		m.Logger.Warn("PUBLIC_BASE_URL is not set: the OAuth metadata and endpoints and the Shared Signals metadata answer 404 to requests not addressed to a loopback name; set it to the URL clients reach this service at")
	case ok && cfg.Issuer != base:
		m.Logger.Warn("JWT_ISSUER differs from PUBLIC_BASE_URL: resource servers that check an access token's iss against the authorization server metadata's issuer (RFC 9068 §4) will refuse every token; set JWT_ISSUER to PUBLIC_BASE_URL unless your resource servers expect the old iss",
			"jwt_issuer", cfg.Issuer, "public_base_url", base)
	}
}
