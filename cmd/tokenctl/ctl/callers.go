package ctl

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	"github.com/auth-platform/tokenservice/rpc/auth"
)

// credentials are how tokenctl authenticates to NATS and to tokend.
type credentials struct {
	// NATS: a creds file or an nkey seed file (a subscriber's, to watch
	// revocations on tokend's embedded server; an operator's for the rest),
	// and TLS.
	natsCreds, natsNkey, natsCA, natsCert, natsKey string
	// The service's ENCRYPTION_KEY (base64, or a file holding it): it
	// checks every record's MAC, and without other NATS credentials
	// authenticates as the service's user (its derived nkey).
	encKey, encKeyFile string
	// tokend: an API key (TOKEND_API_KEY, or a file), the CA that verifies
	// its certificate, and a client certificate (mTLS).
	apiKey, apiKeyFile, tokendCA, tokendCert, tokendKey string
}

// vars declares the credentials' variables and flags. The secrets
// themselves (ENCRYPTION_KEY, TOKEND_API_KEY) have no flag, so that they
// never appear in a process list.
func (c *credentials) vars() []envvar.Var {
	return []envvar.Var{
		{Name: "NATS_CREDS", Flag: "nats-creds", Parse: envvar.String(&c.natsCreds),
			Doc: "NATS credentials file (user JWT and seed)"},
		{Name: "NATS_NKEY_SEED", Flag: "nats-nkey", Parse: envvar.String(&c.natsNkey),
			Doc: "file holding an nkey seed, e.g. tokend's DATA_DIR/nats-subscriber.nk"},
		{Name: "NATS_CA_FILE", Flag: "nats-ca", Parse: envvar.String(&c.natsCA),
			Doc: "CA certificates (PEM) that verify the NATS server"},
		{Name: "NATS_CERT_FILE", Flag: "nats-cert", Parse: envvar.String(&c.natsCert),
			Doc: "client certificate (PEM) for NATS, with --nats-key"},
		{Name: "NATS_KEY_FILE", Flag: "nats-key", Parse: envvar.String(&c.natsKey),
			Doc: "private key (PEM) of --nats-cert"},
		{Name: "ENCRYPTION_KEY", Parse: envvar.String(&c.encKey),
			Doc: "tokend's ENCRYPTION_KEY (base64)"},
		{Name: "ENCRYPTION_KEY_FILE", Flag: "encryption-key-file", Parse: envvar.String(&c.encKeyFile),
			Doc: "file holding tokend's ENCRYPTION_KEY (base64; or set ENCRYPTION_KEY), e.g. DATA_DIR/encryption.key: records are checked against their MAC, and without other NATS credentials tokenctl connects as the service"},
		{Name: "TOKEND_API_KEY", Parse: envvar.String(&c.apiKey),
			Doc: "an admin API key for tokend"},
		{Name: "TOKEND_API_KEY_FILE", Flag: "api-key-file", Parse: envvar.String(&c.apiKeyFile),
			Doc: "file holding an admin API key for tokend (or set TOKEND_API_KEY)"},
		{Name: "TOKEND_CA_FILE", Flag: "tokend-ca", Parse: envvar.String(&c.tokendCA),
			Doc: "CA certificates (PEM) that verify tokend's certificate (default: the system roots)"},
		{Name: "TOKEND_CERT_FILE", Flag: "tokend-cert", Parse: envvar.String(&c.tokendCert),
			Doc: "client certificate (PEM) presented to tokend, with --tokend-key"},
		{Name: "TOKEND_KEY_FILE", Flag: "tokend-key", Parse: envvar.String(&c.tokendKey),
			Doc: "private key (PEM) of --tokend-cert"},
	}
}

// encryptionKey returns the service's ENCRYPTION_KEY, or nil if none is
// given.
func (c *credentials) encryptionKey() ([]byte, error) {
	v := c.encKey
	if c.encKeyFile != "" {
		b, err := os.ReadFile(c.encKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--encryption-key-file: %w", err)
		}
		v = string(b)
	}
	if v = strings.TrimSpace(v); v == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(key) != 32 {
		return nil, errors.New("ENCRYPTION_KEY: not the base64 of 32 bytes")
	}
	return key, nil
}

// natsOptions returns the options of the NATS connection.
func (c *credentials) natsOptions() ([]nats.Option, error) {
	var opts []nats.Option
	key, err := c.encryptionKey()
	if err != nil {
		return nil, err
	}
	switch {
	case c.natsCreds != "" && c.natsNkey != "":
		return nil, errors.New("--nats-creds and --nats-nkey: give one")
	case c.natsCreds != "":
		opts = append(opts, nats.UserCredentials(c.natsCreds))
	case c.natsNkey != "":
		opt, err := nats.NkeyOptionFromSeed(c.natsNkey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		opts = append(opts, opt)
	case key != nil:
		kp, err := eventlog.ServiceKey(key)
		if err != nil {
			return nil, err
		}
		opts = append(opts, eventlog.NkeyOption(kp))
	}
	if c.natsCA != "" {
		opts = append(opts, nats.RootCAs(c.natsCA))
	}
	if (c.natsCert == "") != (c.natsKey == "") {
		return nil, errors.New("--nats-cert and --nats-key go together")
	}
	if c.natsCert != "" {
		opts = append(opts, nats.ClientCert(c.natsCert, c.natsKey))
	}
	return opts, nil
}

// consumerName returns the name of the feed consumer a subscriber may
// manage on tokend's embedded server: the public key of --nats-nkey; "" (a
// random name) without it.
func (c *credentials) consumerName() (string, error) {
	if c.natsNkey == "" {
		return "", nil
	}
	name, err := subscriber.ConsumerName(c.natsNkey)
	if err != nil {
		return "", fmt.Errorf("--nats-nkey: %w", err)
	}
	return name, nil
}

// httpClient returns the client for tokend: TLS with the given CA and
// client certificate, HTTP/2 where TLS offers it, and the API key as a
// bearer credential on every request.
func (c *credentials) httpClient() (*http.Client, error) {
	key := c.apiKey
	if c.apiKeyFile != "" {
		b, err := os.ReadFile(c.apiKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--api-key-file: %w", err)
		}
		key = strings.TrimSpace(string(b))
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.tokendCA != "" {
		pem, err := os.ReadFile(c.tokendCA)
		if err != nil {
			return nil, fmt.Errorf("--tokend-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tokend-ca %s: no PEM certificate", c.tokendCA)
		}
	}
	if (c.tokendCert == "") != (c.tokendKey == "") {
		return nil, errors.New("--tokend-cert and --tokend-key go together")
	}
	if c.tokendCert != "" {
		pair, err := tls.LoadX509KeyPair(c.tokendCert, c.tokendKey)
		if err != nil {
			return nil, fmt.Errorf("--tokend-cert: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, Proxy: http.ProxyFromEnvironment}
	return &http.Client{Transport: bearerTransport{key: key, next: tr}, Timeout: time.Minute}, nil
}

// bearerTransport adds the API key to every request.
type bearerTransport struct {
	key  string
	next http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.key != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.key)
	}
	return b.next.RoundTrip(r)
}

// stringList is a flag that may be repeated and holds comma-separated
// values.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// apikeyNew makes a new API key and prints it with the policy entry that
// admits it; nothing is stored, and NATS and tokend are not contacted.
func (o *options) apikeyNew(name string, roles, clientIDs, audiences, extraClaims []string, expires string) error {
	rs := make([]auth.Role, len(roles))
	for i, r := range roles {
		rs[i] = auth.Role(r)
	}
	key, entry, err := auth.GenerateAPIKey(rand.Reader, name, rs...)
	if err != nil {
		return err
	}
	entry.ClientIDs, entry.Audiences, entry.ExtraClaims, entry.Expires = clientIDs, audiences, extraClaims, expires
	// The entry must be one the policy accepts as it will be written.
	if _, err := auth.ParsePolicy([]byte("api_keys:\n" + entry.Line() + "\n" + auth.EndMarker + "\n")); err != nil {
		return err
	}
	if o.json {
		return json.NewEncoder(o.stdout).Encode(map[string]any{"key": key, "entry": entry})
	}
	_, err = fmt.Fprintf(o.stdout, "# The key, for the caller only (tokend keeps its SHA-256, never the key):\n%s\n\n"+
		"# Add under api_keys: in AUTH_POLICY_FILE, above its last line %q (tokend reloads it by itself):\n%s\n", key, auth.EndMarker, entry.Line())
	return err
}

// apikeyCommand parses apikey new.
func (o *options) apikeyCommand(fs *flag.FlagSet, args []string) (func(context.Context) error, error) {
	name := fs.String("name", "", "the caller's name, recorded as the actor of the events it causes (apikey:<name>)")
	var roles, clientIDs, audiences, extraClaims stringList
	fs.Var(&roles, "role", "a role: issuer, resource-server or admin (repeat, or comma-separate)")
	fs.Var(&clientIDs, "client-id", "a client_id the caller may mint tokens for (repeat; none: any)")
	fs.Var(&audiences, "audience", "a token audience a resource server may validate and introspect tokens for (repeat; none: any)")
	fs.Var(&extraClaims, "extra-claim", "an authorization claim (roles, groups, act, …) the caller may set in extra_claims (repeat; none: none)")
	expires := fs.String("expires", "", "when the key stops working, RFC 3339 (default: never)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *name == "" || len(roles) == 0 {
		return nil, errors.New("apikey new needs --name and at least one --role")
	}
	return func(context.Context) error {
		return o.apikeyNew(*name, roles, clientIDs, audiences, extraClaims, *expires)
	}, nil
}

// clientCommand parses client new: the policy entry of an OAuth client,
// with a new secret for client_secret_basic; nothing is stored, and NATS
// and tokend are not contacted.
func (o *options) clientCommand(fs *flag.FlagSet, args []string) (func(context.Context) error, error) {
	clientID := fs.String("client-id", "", "the client_id")
	method := fs.String("auth", string(auth.ClientAuthSecretBasic), "how it authenticates: none (a public client), client_secret_basic, private_key_jwt (with --jwks-file) or tls_client_auth (with --identity)")
	jwksFile := fs.String("jwks-file", "", "private_key_jwt: a JWK set (JSON) of the client's public keys")
	identity := fs.String("identity", "", "tls_client_auth: the identity of its certificate (URI SAN, or subject CN)")
	var roles, audiences stringList
	fs.Var(&roles, "role", "a role beyond using its own tokens: resource-server lets it introspect any token (repeat)")
	fs.Var(&audiences, "audience", "with resource-server: a token audience it may introspect (repeat; none: any)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *clientID == "" {
		return nil, errors.New("client new needs --client-id")
	}
	return func(context.Context) error {
		entry := auth.ClientEntry{ClientID: *clientID, Auth: auth.ClientAuthMethod(*method), Identity: *identity, Audiences: audiences}
		for _, r := range roles {
			entry.Roles = append(entry.Roles, auth.Role(r))
		}
		var secret string
		switch entry.Auth {
		case auth.ClientAuthSecretBasic:
			s, e, err := auth.GenerateClientSecret(rand.Reader, *clientID)
			if err != nil {
				return err
			}
			secret, entry.SecretSHA256 = s, e.SecretSHA256
		case auth.ClientAuthPrivateKeyJWT:
			if *jwksFile == "" {
				return errors.New("private_key_jwt needs --jwks-file")
			}
			b, err := os.ReadFile(*jwksFile)
			if err != nil {
				return err
			}
			entry.JWKS = new(auth.ClientJWKS)
			if err := json.Unmarshal(b, entry.JWKS); err != nil {
				return fmt.Errorf("--jwks-file: %w", err)
			}
		}
		// The entry must be one the policy accepts as it will be written.
		if _, err := auth.ParsePolicy([]byte("clients:\n" + entry.Line() + "\n" + auth.EndMarker + "\n")); err != nil {
			return err
		}
		if o.json {
			return json.NewEncoder(o.stdout).Encode(map[string]any{"client_secret": secret, "entry": entry})
		}
		if secret != "" {
			if _, err := fmt.Fprintf(o.stdout, "# The client secret, for the client only (tokend keeps its SHA-256, never the secret):\n%s\n\n", secret); err != nil {
				return err
			}
		}
		_, err := fmt.Fprintf(o.stdout, "# Add under clients: in AUTH_POLICY_FILE, above its last line %q (tokend reloads it by itself):\n%s\n", auth.EndMarker, entry.Line())
		return err
	}, nil
}
