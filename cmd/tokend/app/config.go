package app

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/signing"
)

// Config is the whole configuration of tokend. ConfigFromEnv documents the
// environment variable and default of every field.
type Config struct {
	Host            string
	Port            int
	Issuer          string
	Algorithm       signing.Algorithm
	AccessTTL       time.Duration
	RefreshTTL      time.Duration
	Grace           time.Duration
	EventRetention  time.Duration
	KMSProvider     string
	EncryptionKey   []byte // nil: generated once under DataDir
	PreviousKeys    [][]byte
	DataDir         string
	NATSURL         string
	NATSListen      string
	NATSReplicas    int
	NATSSyncAlways  bool
	NATSSync        time.Duration
	Stream          string
	SubjectPrefix   string
	JWKSMaxAge      time.Duration
	KeyRetention    time.Duration
	Prepublish      time.Duration
	RotationPeriod  time.Duration
	MaxRequestBytes int
	ShutdownTimeout time.Duration
	LogLevel        slog.Level
	LogFormat       string
	// OTLPEndpoint is the OTLP/HTTP base URL traces are exported to;
	// empty turns tracing off.
	OTLPEndpoint string
	// ServiceName is the service.name resource attribute of the traces.
	ServiceName string
	// SampleRatio is the fraction of traces recorded when
	// OTEL_TRACES_SAMPLER is unset (parent-based: a sampled caller's trace
	// is always followed). When the variable is set, the SDK reads it and
	// OTEL_TRACES_SAMPLER_ARG itself and SampleRatio is 0.
	SampleRatio float64
	// TracerProvider, if set, receives the traces instead of an OTLP
	// exporter (tests use an in-memory one); the caller owns it. It has no
	// environment variable.
	TracerProvider trace.TracerProvider

	// CallerConfig: caller authentication, TLS, the metrics listener and
	// NATS credentials (callers.go).
	CallerConfig

	KMSEndpoint       string
	KMSKeyID          string
	CryptoFallback    bool
	CryptoRateLimit   float64
	CryptoTimeout     time.Duration
	FallbackAccessTTL time.Duration

	// KMS_PROVIDER=pkcs11: the HSM's module, token and user PIN, and the
	// label prefix of the keys tokend makes there.
	PKCS11Module      string
	PKCS11TokenLabel  string
	PKCS11PIN         Secret
	PKCS11LabelPrefix string
	// The crypto service (KMS_PROVIDER=cryptosvc, and envelope sealing
	// when CryptoEncryption): its address, the files that verify it and
	// authenticate tokend (mTLS), an API key, and the namespace of
	// tokend's keys.
	CryptoServiceAddress  string
	CryptoServiceCAFile   string
	CryptoServiceCertFile string
	CryptoServiceKeyFile  string
	CryptoServiceAPIKey   Secret
	CryptoSigning         bool
	CryptoEncryption      bool
	CryptoKeyNamespace    string

	DPoPAlgorithms     []signing.Algorithm
	DPoPTokenEndpoints []string
	DPoPSkew           time.Duration
	DPoPJTITTL         time.Duration
	DPoPNonceRequired  bool
	DPoPNonceRotation  time.Duration
}

// Variables lists every environment variable tokend reads, with its
// default, in the order of the README.
var Variables = []struct{ Name, Default, Meaning string }{
	{"HOST", "0.0.0.0", "address the RPC/HTTP port binds to"},
	{"PORT", "50051", "RPC/HTTP port (Connect, gRPC, gRPC-Web, JWKS, health, metrics unless METRICS_ADDR)"},
	{"AUTH_MODE", "apikey with AUTH_POLICY_FILE (apikey,mtls with TLS_CLIENT_CA_FILE too), else none", "how callers authenticate: apikey (bearer API keys), mtls (client certificates), apikey,mtls (either), or none (no authentication: only when HOST is loopback; any other HOST refuses to start)"},
	{"AUTH_POLICY_FILE", "", "the caller policy (YAML): API-key hashes and certificate identities with their roles, client_ids, expiry and rate limit; reloaded when it changes and on SIGHUP"},
	{"TLS_CERT_FILE", "", "certificate chain (PEM) of the port: TLS with HTTP/2 by ALPN (unset: h2c, for loopback development); reloaded when the file changes"},
	{"TLS_KEY_FILE", "", "private key (PEM) of TLS_CERT_FILE"},
	{"TLS_CLIENT_CA_FILE", "", "CA certificates (PEM) that verify client certificates (AUTH_MODE with mtls); a certificate is asked for, not required, so probes and JWKS fetchers need none"},
	{"METRICS_ADDR", "", "host:port of a listener of its own for GET /metrics (plain HTTP, no authentication); /metrics then leaves the main port, where it needs the admin role"},
	{"JWT_ISSUER", "auth-platform", "iss claim of access tokens"},
	{"JWT_ALGORITHM", "RS256", "signing algorithm: RS256, PS256, ES256, ES384 or EdDSA"},
	{"ACCESS_TOKEN_TTL", "900", "access-token lifetime (seconds, or a Go duration such as 15m)"},
	{"REFRESH_TOKEN_TTL", "604800", "refresh-token lifetime, renewed by each rotation"},
	{"REFRESH_REUSE_GRACE", "5", "grace window in which the previous refresh token returns the same successor; 0 disables"},
	{"EVENT_RETENTION", "34560000", "how long family and subject events stay in the log after the family ended (400 days); 0 keeps them forever. Key events always stay; archive older events with tokenctl export --archive"},
	{"KMS_PROVIDER", "local", "signing backend: local (mock is an alias), aws (AWS KMS; region and credentials from the AWS SDK's standard settings, e.g. AWS_REGION), pkcs11 (an HSM) or cryptosvc (a crypto service)"},
	{"KMS_KEY_ID", "", "an existing AWS KMS key (ID, ARN or alias) to sign with first; later rotations create keys"},
	{"KMS_ENDPOINT", "", "AWS KMS endpoint URL, for an emulator or a VPC endpoint (the SDK's AWS_ENDPOINT_URL_KMS works too)"},
	{"PKCS11_MODULE", "", "KMS_PROVIDER=pkcs11: path of the HSM's PKCS#11 library (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"},
	{"PKCS11_TOKEN_LABEL", "", "KMS_PROVIDER=pkcs11: label of the token that holds the signing keys"},
	{"PKCS11_PIN", "", "KMS_PROVIDER=pkcs11: the token's user PIN (or PKCS11_PIN_FILE); never logged"},
	{"PKCS11_PIN_FILE", "", "file holding the user PIN (a mounted secret); wins over PKCS11_PIN"},
	{"PKCS11_LABEL_PREFIX", "tokenservice-signing/", "start of the CKA_LABEL of the keys tokend makes; the reconciler deletes unreferenced objects with it, so deployments sharing a token need different ones"},
	{"CRYPTO_SERVICE_ADDRESS", "", "crypto service (crypto.v1, e.g. cmd/cryptod): https://host:port"},
	{"CRYPTO_SERVICE_CA_FILE", "", "CA bundle (PEM) that verifies the crypto service (default: the system roots)"},
	{"CRYPTO_SERVICE_CERT_FILE", "", "client certificate (PEM) tokend presents to the crypto service (mTLS), with CRYPTO_SERVICE_KEY_FILE"},
	{"CRYPTO_SERVICE_KEY_FILE", "", "private key (PEM) of CRYPTO_SERVICE_CERT_FILE"},
	{"CRYPTO_SERVICE_API_KEY_FILE", "", "file holding an API key sent to the crypto service as a bearer credential; never logged"},
	{"CRYPTO_SIGNING_ENABLED", "true with cryptosvc", "sign with the crypto service: true is the same as KMS_PROVIDER=cryptosvc"},
	{"CRYPTO_ENCRYPTION_ENABLED", "false", "seal local keys and grace records with envelope encryption: data keys wrapped by the crypto service (needs CRYPTO_SERVICE_ADDRESS)"},
	{"CRYPTO_KEY_NAMESPACE", "tokenservice", "the crypto service namespace of tokend's keys"},
	{"CRYPTO_FALLBACK_ENABLED", "true with aws, pkcs11, cryptosvc", "keep a local key pre-published in the JWKS and sign with it while the remote backend is unavailable; seal under ENCRYPTION_KEY while the crypto service cannot wrap a data key"},
	{"CRYPTO_RATE_LIMIT", "0", "remote signing calls per second (0: unlimited); excess calls go to the fallback key"},
	{"CRYPTO_TIMEOUT", "2s", "timeout of one remote signing call"},
	{"FALLBACK_ACCESS_TOKEN_TTL", "300", "lifetime of access tokens signed by the fallback key (at most ACCESS_TOKEN_TTL)"},
	{"ENCRYPTION_KEY", "generated", "base64 of 32 bytes; seals private keys and grace records and encrypts the embedded server's files; generated once into DATA_DIR/encryption.key if unset"},
	{"ENCRYPTION_KEY_PREVIOUS", "", "comma-separated earlier ENCRYPTION_KEYs, still accepted to open what they sealed while tokend re-seals the signing keys and the embedded server re-encrypts its files (the first one is the embedded server's previous key)"},
	{"DATA_DIR", "./data", "embedded server's files and the generated encryption key"},
	{"NATS_URL", "", "external NATS server or cluster; unset runs an embedded server"},
	{"NATS_LISTEN", "127.0.0.1:4222", "embedded server's listener for subscribers (port 0 picks one)"},
	{"NATS_REPLICAS", "1 embedded, 3 external", "stream replicas"},
	{"NATS_SYNC", "2m", "embedded server's disk sync: an interval, or always (fsync before every acknowledgement)"},
	{"NATS_STREAM", "TOKENS", "stream name"},
	{"NATS_SUBJECT_PREFIX", "token", "subject prefix of every event"},
	{"NATS_CREDS", "", "credentials file (JWT and seed, from nsc) tokend authenticates to NATS_URL with"},
	{"NATS_NKEY_SEED", "", "file holding the nkey seed tokend authenticates to NATS_URL with (instead of NATS_CREDS); with neither, tokend presents the nkey derived from ENCRYPTION_KEY (tokenctl nats service-key prints its public key)"},
	{"NATS_INSECURE_ALLOW_ANONYMOUS_APPEND", "false", "true starts tokend even when a NATS client without credentials can append to the log (it refuses to by default); only for a throwaway development NATS_URL on loopback, refused for any other host"},
	{"NATS_CA_FILE", "", "CA certificates (PEM) that verify NATS_URL's TLS certificate"},
	{"NATS_CERT_FILE", "", "client certificate (PEM) tokend presents to NATS_URL, with NATS_KEY_FILE"},
	{"NATS_KEY_FILE", "", "private key (PEM) of NATS_CERT_FILE"},
	{"NATS_SUBSCRIBER_KEY", "generated", "comma-separated public nkeys (U...) of the embedded server's subscriber users, one per resource server: each may only read the feed of public revocations and key events (stream TOKENS_FEED) through the one consumer named after its key; unset: one is generated and its seed written to DATA_DIR/nats-subscriber.nk"},
	{"NATS_OPERATOR_KEY", "", "comma-separated public nkeys (U...) of operators (tokenctl) with full access to the embedded server's log"},
	{"JWKS_MAX_AGE", "300", "Cache-Control max-age of the JWKS"},
	{"JWKS_KEY_RETENTION", "86400", "how long a retired key stays in the JWKS (at least ACCESS_TOKEN_TTL)"},
	{"JWKS_PREPUBLISH", "JWKS_MAX_AGE + 60", "how long a new key is in the JWKS before it signs (at least JWKS_MAX_AGE)"},
	{"KEY_ROTATION_PERIOD", "2592000", "how long a key signs before the next takes over (30 days); 0 disables scheduled rotation"},
	{"DPOP_ALGORITHMS", "ES256,ES384,RS256,PS256,EdDSA", "algorithms accepted in DPoP proofs (asymmetric only)"},
	{"DPOP_TOKEN_ENDPOINTS", "", "comma-separated absolute URIs of the token endpoints; a token request's http_uri must be one of them (unset: any, still POST and without ath)"},
	{"DPOP_CLOCK_SKEW", "60", "how old a DPoP proof's iat may be (future-dated proofs get 5s)"},
	{"DPOP_JTI_TTL", "300", "how long a DPoP proof's jti stays claimed in the log (at least DPOP_CLOCK_SKEW + 5s)"},
	{"DPOP_NONCE_REQUIRED", "false", "refuse DPoP proofs without a server nonce (use_dpop_nonce)"},
	{"DPOP_NONCE_ROTATION", "120", "how often the stateless DPoP nonce rotates; a nonce lives one to two periods"},
	{"MAX_REQUEST_BYTES", "65536", "largest accepted request body"},
	{"SHUTDOWN_TIMEOUT", "30", "how long SIGTERM waits for calls in flight"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"LOG_FORMAT", "json", "json or text"},
	{"OTEL_EXPORTER_OTLP_ENDPOINT", "", "OTLP/HTTP base URL (http://collector:4318) traces are exported to; unset turns tracing off"},
	{"OTEL_SERVICE_NAME", "tokend", "service.name of the exported traces"},
	{"OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "the SDK's sampler (always_on, parentbased_always_on, traceidratio, ...); read by the OpenTelemetry SDK when set"},
	{"OTEL_TRACES_SAMPLER_ARG", "0.1", "the sampler's argument; with neither variable set, 10% of traces are recorded (tracing all costs ~6% of GenerateTokens' CPU, see Benchmarks)"},
}

// ConfigFromEnv reads the configuration through getenv (os.Getenv). An
// invalid value is an error that names the variable.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	p := envParser{getenv: getenv}
	c := Config{
		Host:            p.str("HOST", "0.0.0.0"),
		Port:            p.port("PORT", 50051),
		Issuer:          p.str("JWT_ISSUER", "auth-platform"),
		AccessTTL:       p.duration("ACCESS_TOKEN_TTL", 900*time.Second, time.Second),
		RefreshTTL:      p.duration("REFRESH_TOKEN_TTL", 604800*time.Second, time.Second),
		Grace:           p.duration("REFRESH_REUSE_GRACE", 5*time.Second, 0),
		EventRetention:  p.duration("EVENT_RETENTION", 400*24*time.Hour, 0),
		KMSProvider:     p.str("KMS_PROVIDER", "local"),
		DataDir:         p.str("DATA_DIR", "./data"),
		NATSURL:         p.str("NATS_URL", ""),
		NATSListen:      p.str("NATS_LISTEN", "127.0.0.1:4222"),
		Stream:          p.str("NATS_STREAM", "TOKENS"),
		SubjectPrefix:   p.str("NATS_SUBJECT_PREFIX", "token"),
		JWKSMaxAge:      p.duration("JWKS_MAX_AGE", 300*time.Second, time.Second),
		KeyRetention:    p.duration("JWKS_KEY_RETENTION", 86400*time.Second, time.Second),
		RotationPeriod:  p.duration("KEY_ROTATION_PERIOD", 30*24*time.Hour, 0),
		MaxRequestBytes: p.integer("MAX_REQUEST_BYTES", 64<<10, 1024, 16<<20),
		ShutdownTimeout: p.duration("SHUTDOWN_TIMEOUT", 30*time.Second, time.Second),
		LogFormat:       p.str("LOG_FORMAT", "json"),
		OTLPEndpoint:    p.str("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
		ServiceName:     p.str("OTEL_SERVICE_NAME", "tokend"),
	}
	if getenv("OTEL_TRACES_SAMPLER") == "" {
		c.SampleRatio = 0.1
		if v := getenv("OTEL_TRACES_SAMPLER_ARG"); v != "" {
			r, err := strconv.ParseFloat(v, 64)
			if err != nil || r < 0 || r > 1 {
				p.fail("OTEL_TRACES_SAMPLER_ARG", "must be a ratio from 0 to 1")
			}
			c.SampleRatio = r
		}
	}
	if c.OTLPEndpoint != "" {
		if u, err := url.Parse(c.OTLPEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.fail("OTEL_EXPORTER_OTLP_ENDPOINT", "must be an http or https URL such as http://collector:4318")
		}
	}
	c.DPoPSkew = p.duration("DPOP_CLOCK_SKEW", 60*time.Second, time.Second)
	c.DPoPJTITTL = p.duration("DPOP_JTI_TTL", 300*time.Second, time.Second)
	c.DPoPNonceRotation = p.duration("DPOP_NONCE_ROTATION", 120*time.Second, time.Second)
	c.DPoPNonceRequired = p.boolean("DPOP_NONCE_REQUIRED", false)
	if v := getenv("DPOP_TOKEN_ENDPOINTS"); v != "" {
		for _, u := range strings.Split(v, ",") {
			u = strings.TrimSpace(u)
			if _, err := dpop.NormalizeURI(u); err != nil {
				p.fail("DPOP_TOKEN_ENDPOINTS", fmt.Sprintf("%q is not an absolute http(s) URI", u))
				continue
			}
			c.DPoPTokenEndpoints = append(c.DPoPTokenEndpoints, u)
		}
	}
	for _, name := range strings.Split(p.str("DPOP_ALGORITHMS", "ES256,ES384,RS256,PS256,EdDSA"), ",") {
		a, err := signing.ParseAlgorithm(strings.TrimSpace(name))
		if err != nil {
			p.fail("DPOP_ALGORITHMS", err.Error())
			continue
		}
		c.DPoPAlgorithms = append(c.DPoPAlgorithms, a)
	}
	if c.DPoPJTITTL < c.DPoPSkew+dpopFutureSkew {
		p.fail("DPOP_JTI_TTL", "must be at least DPOP_CLOCK_SKEW + 5s, or a replayed proof could outlive its claim")
	}
	alg, err := signing.ParseAlgorithm(p.str("JWT_ALGORITHM", "RS256"))
	if err != nil {
		p.fail("JWT_ALGORITHM", err.Error())
	}
	c.Algorithm = alg
	c.cryptoFromEnv(&p)
	switch c.KMSProvider {
	case "local", "mock":
		c.KMSProvider = "local"
	case "aws":
		if c.Algorithm != signing.RS256 && c.Algorithm != signing.PS256 && c.Algorithm != signing.ES256 {
			p.fail("JWT_ALGORITHM", "AWS KMS signs RS256, PS256 or ES256")
		}
	case "pkcs11", "cryptosvc":
		if c.Algorithm == signing.EdDSA {
			p.fail("JWT_ALGORITHM", "KMS_PROVIDER="+c.KMSProvider+" signs RS256, PS256, ES256 or ES384")
		}
	default:
		p.fail("KMS_PROVIDER", fmt.Sprintf("%q is not supported (want local, mock, aws, pkcs11 or cryptosvc)", c.KMSProvider))
	}
	if v := getenv("ENCRYPTION_KEY_PREVIOUS"); v != "" {
		for _, k := range strings.Split(v, ",") {
			key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k))
			if err != nil || len(key) != 32 {
				p.fail("ENCRYPTION_KEY_PREVIOUS", "must be comma-separated standard base64 of 32 bytes each")
				continue
			}
			c.PreviousKeys = append(c.PreviousKeys, key)
		}
		if getenv("ENCRYPTION_KEY") == "" {
			p.fail("ENCRYPTION_KEY_PREVIOUS", "needs ENCRYPTION_KEY (the new key)")
		}
	}
	c.KMSEndpoint = p.str("KMS_ENDPOINT", "")
	c.KMSKeyID = p.str("KMS_KEY_ID", "")
	remote := c.KMSProvider == "aws" || c.KMSProvider == "pkcs11" || c.KMSProvider == "cryptosvc"
	c.CryptoFallback = p.boolean("CRYPTO_FALLBACK_ENABLED", remote)
	if v := getenv("CRYPTO_RATE_LIMIT"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 {
			p.fail("CRYPTO_RATE_LIMIT", "must be a number of calls per second, 0 for unlimited")
		}
		c.CryptoRateLimit = r
	}
	c.CryptoTimeout = p.duration("CRYPTO_TIMEOUT", 2*time.Second, 10*time.Millisecond)
	c.FallbackAccessTTL = p.duration("FALLBACK_ACCESS_TOKEN_TTL", 300*time.Second, time.Second)
	if k := getenv("ENCRYPTION_KEY"); k != "" {
		key, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(key) != 32 {
			p.fail("ENCRYPTION_KEY", "must be the standard base64 of exactly 32 bytes (openssl rand -base64 32)")
		}
		c.EncryptionKey = key
	}
	switch sync := p.str("NATS_SYNC", "2m"); sync {
	case "always":
		c.NATSSyncAlways = true
	default:
		d, err := time.ParseDuration(sync)
		if err != nil || d <= 0 {
			p.fail("NATS_SYNC", "must be always or a positive duration such as 2m")
		}
		c.NATSSync = d
	}
	defReplicas := 1
	if c.NATSURL != "" {
		defReplicas = 3
	}
	c.NATSReplicas = p.integer("NATS_REPLICAS", defReplicas, 1, 5)
	if c.NATSURL == "" && c.NATSReplicas != 1 {
		p.fail("NATS_REPLICAS", "must be 1 with the embedded server (set NATS_URL for a cluster)")
	}
	if _, _, err := net.SplitHostPort(c.NATSListen); err != nil && c.NATSURL == "" {
		p.fail("NATS_LISTEN", "must be host:port")
	}
	if c.Issuer == "" {
		p.fail("JWT_ISSUER", "must not be empty")
	}
	if c.Grace >= c.RefreshTTL {
		p.fail("REFRESH_REUSE_GRACE", "must be shorter than REFRESH_TOKEN_TTL")
	}
	c.Prepublish = p.duration("JWKS_PREPUBLISH", c.JWKSMaxAge+time.Minute, time.Second)
	if c.Prepublish < c.JWKSMaxAge {
		p.fail("JWKS_PREPUBLISH", "must be at least JWKS_MAX_AGE, or a verifier that cached the JWKS could meet an unknown kid")
	}
	if c.RotationPeriod != 0 && c.RotationPeriod <= c.Prepublish {
		p.fail("KEY_ROTATION_PERIOD", "must be 0 or longer than JWKS_PREPUBLISH")
	}
	if c.KeyRetention < c.AccessTTL {
		p.fail("JWKS_KEY_RETENTION", "must be at least ACCESS_TOKEN_TTL, or tokens would outlive their key in the JWKS")
	}
	switch lv := strings.ToLower(p.str("LOG_LEVEL", "info")); lv {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info":
		c.LogLevel = slog.LevelInfo
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		p.fail("LOG_LEVEL", "must be debug, info, warn or error")
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		p.fail("LOG_FORMAT", "must be json or text")
	}
	c.callersFromEnv(&p)
	c.DataDir = filepath.Clean(c.DataDir)
	return c, errors.Join(p.errs...)
}

// dpopFutureSkew is how far in the future a DPoP proof's iat may be.
const dpopFutureSkew = 5 * time.Second

type envParser struct {
	getenv func(string) string
	errs   []error
}

func (p *envParser) fail(name, msg string) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", name, msg))
}

func (p *envParser) str(name, def string) string {
	if v := p.getenv(name); v != "" {
		return v
	}
	return def
}

func (p *envParser) integer(name string, def, lo, hi int) int {
	v := p.getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(name, fmt.Sprintf("must be an integer from %d to %d, got %q", lo, hi, v))
		return def
	}
	return n
}

// boolean accepts true, 1, false and 0.
func (p *envParser) boolean(name string, def bool) bool {
	switch v := p.getenv(name); v {
	case "":
		return def
	case "true", "1":
		return true
	case "false", "0":
		return false
	}
	p.fail(name, "must be true or false")
	return def
}

func (p *envParser) port(name string, def int) int { return p.integer(name, def, 0, 65535) }

// duration accepts whole seconds ("900") or a Go duration ("15m"), at
// least lo.
func (p *envParser) duration(name string, def, lo time.Duration) time.Duration {
	v := p.getenv(name)
	if v == "" {
		return def
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(v); err != nil {
		p.fail(name, fmt.Sprintf("must be seconds or a duration such as 15m, got %q", v))
		return def
	}
	if d < lo || d < 0 {
		p.fail(name, fmt.Sprintf("must be at least %s, got %q", lo, v))
		return def
	}
	return d
}
