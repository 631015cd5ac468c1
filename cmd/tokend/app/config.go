package app

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/cryptosvc"
)

// Config is the whole configuration of tokend. Variables documents the
// environment variable and default of every field.
type Config struct {
	Host           string
	Port           int
	PublicURL      rpc.PublicURL
	Issuer         string
	Algorithm      signing.Algorithm
	AccessTTL      time.Duration
	RefreshTTL     time.Duration
	Grace          time.Duration
	KMSProvider    string
	EncryptionKey  []byte // nil: generated once under DataDir
	PreviousKeys   [][]byte
	DataDir        string
	NATSURL        string
	NATSListen     string
	NATSReplicas   int
	NATSSyncAlways bool
	NATSSync       time.Duration
	Stream         string
	SubjectPrefix  string
	JWKSMaxAge     time.Duration
	KeyRetention   time.Duration
	// CheckpointInterval is how often the projections' checkpoint is
	// considered (projections.Checkpoints); 0 turns checkpoints off.
	CheckpointInterval time.Duration
	// EventRetention is how long family and subject events stay in the
	// log after the family ended; 0 keeps them forever.
	EventRetention time.Duration
	Prepublish     time.Duration
	// SSF* configure the Shared Signals transmitter (package ssf).
	SSFEnabled          bool
	SSFRetention        time.Duration
	SSFMaxStreams       int
	SSFStreamMaxPending int
	SSFPushTimeout      time.Duration
	SSFPushMaxBackoff   time.Duration
	SSFPushAllowPrivate bool
	RotationPeriod      time.Duration
	MaxRequestBytes     int
	ShutdownTimeout     time.Duration
	LogLevel            slog.Level
	LogFormat           string
	// LoggingAddress, if set, is the OTLP/gRPC receiver every log record
	// also goes to (LOGGING_SERVICE_ADDRESS); empty: stdout only.
	LoggingAddress string
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

	// SigningOpenSSL is auto, on or off: whether local RSA keys sign with
	// the system's OpenSSL (SIGNING_OPENSSL).
	SigningOpenSSL string

	KMSEndpoint     string
	KMSKeyID        string
	CryptoFallback  bool
	CryptoRateLimit float64
	// The remote backends' circuit breaker: consecutive failures that
	// open it, how long it stays open, trial calls when half-open.
	CryptoBreakerFailures int
	CryptoBreakerOpen     time.Duration
	CryptoBreakerProbes   int
	CryptoTimeout         time.Duration
	FallbackAccessTTL     time.Duration

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
	// CryptoSigningKey and CryptoSigningKeyVersion are CRYPTO_SIGNING_KEY:
	// a provisioned key's name, and its pinned version (0: the primary).
	CryptoSigningKey        string
	CryptoSigningKeyVersion uint32
	// CacheServiceAddress is read only to log that it is not used: the
	// cache is the families read model on the NATS cluster.
	CacheServiceAddress string

	DPoPAlgorithms     []signing.Algorithm
	DPoPTokenEndpoints []string
	DPoPSkew           time.Duration
	DPoPJTITTL         time.Duration
	DPoPNonceRequired  bool
	DPoPNonceRotation  time.Duration
}

// Variables documents every environment variable tokend reads, with its
// default, in the order of the README; it is rendered from the same
// declarations ConfigFromEnv parses (vars.go).
var Variables = envvar.Docs(new(reading).vars())

// ConfigFromEnv reads the configuration through getenv (os.Getenv). An
// invalid value is an error that names the variable; every problem is
// reported, not only the first.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	r := &reading{}
	errs := envvar.Load(getenv, r.vars())
	r.compose(errs)
	return r.c, errs.Err()
}

// defaultKMSProvider is the signing backend when neither KMS_PROVIDER nor
// CRYPTO_SIGNING_ENABLED chooses one.
const defaultKMSProvider = "local"

// reading is one read of the environment: the Config being built, and the
// settings whose default depends on other variables (nil or zero while
// unset), which compose resolves.
type reading struct {
	c              Config
	authMode       *AuthMode
	cryptoSigning  *bool
	cryptoFallback *bool
	sampler        string
}

// compose derives the defaults that depend on other variables and checks
// the rules that span several; it runs after every variable is parsed.
func (r *reading) compose(errs *envvar.Errors) {
	c := &r.c
	r.composeCrypto(errs)
	if algs := signerAlgorithms(c.KMSProvider); algs != nil && !slices.Contains(algs, c.Algorithm) {
		errs.Fail("JWT_ALGORITHM", fmt.Sprintf("KMS_PROVIDER=%s signs %s", c.KMSProvider, algorithmList(algs)))
	}
	if c.CryptoFallback = c.KMSProvider != "local"; r.cryptoFallback != nil {
		c.CryptoFallback = *r.cryptoFallback
	}
	if len(c.PreviousKeys) > 0 && c.EncryptionKey == nil {
		errs.Fail("ENCRYPTION_KEY_PREVIOUS", "needs ENCRYPTION_KEY (the new key)")
	}
	if c.DPoPJTITTL < c.DPoPSkew+dpopFutureSkew {
		errs.Fail("DPOP_JTI_TTL", "must be at least DPOP_CLOCK_SKEW + 5s, or a replayed proof could outlive its claim")
	}
	if c.NATSReplicas == 0 {
		c.NATSReplicas = 1
		if c.NATSURL != "" {
			c.NATSReplicas = 3
		}
	}
	if c.NATSURL == "" && c.NATSReplicas != 1 {
		errs.Fail("NATS_REPLICAS", "must be 1 with the embedded server (set NATS_URL for a cluster)")
	}
	if _, _, err := net.SplitHostPort(c.NATSListen); err != nil && c.NATSURL == "" {
		errs.Fail("NATS_LISTEN", "must be host:port")
	}
	if c.Grace >= c.RefreshTTL {
		errs.Fail("REFRESH_REUSE_GRACE", "must be shorter than REFRESH_TOKEN_TTL")
	}
	if c.Prepublish == 0 {
		c.Prepublish = c.JWKSMaxAge + time.Minute
	}
	if c.Prepublish < c.JWKSMaxAge {
		errs.Fail("JWKS_PREPUBLISH", "must be at least JWKS_MAX_AGE, or a verifier that cached the JWKS could meet an unknown kid")
	}
	if c.RotationPeriod != 0 && c.RotationPeriod <= c.Prepublish {
		errs.Fail("KEY_ROTATION_PERIOD", "must be 0 or longer than JWKS_PREPUBLISH")
	}
	if c.KeyRetention < c.AccessTTL {
		errs.Fail("JWKS_KEY_RETENTION", "must be at least ACCESS_TOKEN_TTL, or tokens would outlive their key in the JWKS")
	}
	r.composeCallers(errs)
}

// signerAlgorithms returns the algorithms the signing backend of provider
// can sign with, as its package declares them; nil means any (local), or
// a backend this build cannot start (pkcs11 without cgo: Start says so).
func signerAlgorithms(provider string) []signing.Algorithm {
	switch provider {
	case "aws":
		return awskms.Algorithms
	case "pkcs11":
		return pkcs11Algorithms()
	case "cryptosvc":
		return cryptosvc.Algorithms
	}
	return nil
}

// dpopFutureSkew is how far in the future a DPoP proof's iat may be.
const dpopFutureSkew = 5 * time.Second
