package rpc

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/issuer"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/signing"
)

// Config configures the HTTP handler of the service.
type Config struct {
	// Issuer executes the commands. Required.
	Issuer *issuer.Issuer
	// DPoP verifies DPoP proofs. Required.
	DPoP *dpop.Verifier
	// Keys publishes the JWKS. Required.
	Keys KeySource
	// KeyAdmin stages signing-key rotations (admin RPCs). Required.
	KeyAdmin KeyAdmin
	// KeyCompromiser carries out RotateSigningKey with immediate (a
	// compromised key). Required.
	KeyCompromiser KeyCompromiser
	// Revocations, if set, lets ValidateDPoP refuse revoked tokens.
	Revocations issuer.RevocationView
	// Families, if set, serves ListFamilies from the families read model.
	Families FamilyLister
	// Feed, if set, serves WatchRevocations.
	Feed RevocationFeed
	// MaxWatchers bounds the concurrent WatchRevocations streams; more
	// are refused with resource_exhausted. Default 1024.
	MaxWatchers int
	// MaxWatchersPerCaller bounds the streams of one authenticated
	// caller. Default 64.
	MaxWatchersPerCaller int
	// MaxHealthWatchers bounds the concurrent gRPC health Watch streams,
	// which are public; more are refused with resource_exhausted. Check,
	// which probes use, is not limited. Default 64.
	MaxHealthWatchers int
	// TokenEndpoints are the absolute URIs of the token endpoints whose
	// DPoP proofs GenerateTokens and RefreshTokens accept (http_uri must
	// be one of them). Default: any URI (POST, no ath) is accepted.
	TokenEndpoints []string
	// PublicURL is the service's public base URL (PUBLIC_BASE_URL), from
	// which the published absolute URLs are made. Default: not configured
	// (see PublicURL).
	PublicURL PublicURL
	// SharedSignals, if set, serves the Shared Signals transmitter
	// (package ssf: its metadata, stream management and poll paths).
	SharedSignals interface{ Register(mux *http.ServeMux) }
	// Ready reports whether the projections have caught up. Required.
	Ready func() bool
	// Projections, if set, is served on GET /projections/digest (position
	// and digest of the live projections) for tokenctl replay --verify.
	Projections interface {
		Snapshot() (seq uint64, digest string)
	}
	// Metrics, if set, is served on /metrics and observes every call.
	Metrics *Metrics
	// NoMetricsEndpoint keeps /metrics off this handler, for a service
	// that serves Metrics.Handler on a listener of its own. Default false.
	NoMetricsEndpoint bool
	// Guard, if set, authenticates and authorizes every call (see package
	// auth): its middleware wraps the whole handler, inside the one that
	// sets the correlation ID, so refusals carry it too, and its
	// interceptor runs inside the metrics interceptor.
	// Default: no guard, every call is allowed.
	Guard *auth.Guard
	// Logger receives server errors. Default slog.Default().
	Logger *slog.Logger
	// MaxRequestBytes bounds a request body. Default 64 KiB.
	MaxRequestBytes int
	// JWKSMaxAge is the Cache-Control max-age of the JWKS. Default 5 min.
	JWKSMaxAge time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// TracerProvider, if set, traces every RPC (otelconnect; W3C trace
	// context). A caller's traceparent becomes a link, not the parent: the
	// service faces untrusted clients. Default: no tracing.
	TracerProvider trace.TracerProvider
}

// Handler is the service's HTTP handler plus its health checker.
type Handler struct {
	http.Handler
	health *cappedHealth
}

// SetServing flips the gRPC health status of the service.
func (h *Handler) SetServing(ok bool) {
	st := grpchealth.StatusNotServing
	if ok {
		st = grpchealth.StatusServing
	}
	h.health.SetStatus(tokenv1connect.TokenServiceName, st)
	h.health.SetStatus("", st)
}

// New returns the HTTP handler of the service.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 64 << 10
	}
	if cfg.JWKSMaxAge <= 0 {
		cfg.JWKSMaxAge = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxWatchers <= 0 {
		cfg.MaxWatchers = 1024
	}
	if cfg.MaxWatchersPerCaller <= 0 {
		cfg.MaxWatchersPerCaller = 64
	}
	if cfg.MaxHealthWatchers <= 0 {
		cfg.MaxHealthWatchers = 64
	}
	var interceptors []connect.Interceptor
	if cfg.TracerProvider != nil {
		// Outermost, so that the metrics and the server-error log run
		// inside the RPC's span.
		tracing, err := otelconnect.NewInterceptor(
			otelconnect.WithTracerProvider(cfg.TracerProvider),
			otelconnect.WithPropagator(propagation.TraceContext{}),
			otelconnect.WithoutMetrics(), // Prometheus has them
		)
		if err != nil {
			// Only instrument creation can fail, and metrics are off.
			cfg.Logger.Error("RPC tracing disabled", "error", err)
		} else {
			interceptors = append(interceptors, tracing)
		}
	}
	if cfg.Metrics != nil {
		interceptors = append(interceptors, cfg.Metrics.interceptor())
	}
	if cfg.Guard != nil {
		interceptors = append(interceptors, cfg.Guard.Interceptor())
	}
	opts := []connect.HandlerOption{
		connect.WithInterceptors(interceptors...),
		connect.WithReadMaxBytes(cfg.MaxRequestBytes),
		connect.WithSendMaxBytes(1 << 20),
		// Token responses are ~0.5-1 KB of mostly base64 that gzip shrinks
		// by ~20%, while each gzip writer reset clears ~600 KB of tables:
		// compressing them cost 18% of the CPU of GenerateTokens (pprof).
		connect.WithCompressMinBytes(4 << 10),
	}
	mux := http.NewServeMux()
	svc := &service{issuer: cfg.Issuer, dpop: cfg.DPoP, keys: cfg.Keys, keyAdmin: cfg.KeyAdmin, keyCompromiser: cfg.KeyCompromiser, revocations: cfg.Revocations, families: cfg.Families, feed: cfg.Feed, watchers: make(chan struct{}, cfg.MaxWatchers),
		perCaller: &watcherCounts{max: cfg.MaxWatchersPerCaller, count: map[string]int{}}, tokenEndpoints: normalizeAll(cfg.TokenEndpoints), log: cfg.Logger, metrics: cfg.Metrics, now: cfg.Now}
	path, h := tokenv1connect.NewTokenServiceHandler(svc, opts...)
	mux.Handle(path, h)
	// Each procedure's own path too, for the same handler: the mux routes a
	// literal path without allocating, where the prefix pattern copies the
	// rest of the path as a wildcard match (3 allocations a call). The
	// prefix still takes the paths of unknown procedures to Connect.
	methods := tokenv1.File_token_v1_token_proto.Services().ByName("TokenService").Methods()
	for i := range methods.Len() {
		mux.Handle(path+string(methods.Get(i).Name()), h)
	}

	// Health and reflection read at most what the service does, so an
	// oversized request gets resource_exhausted everywhere.
	bounded := connect.WithReadMaxBytes(cfg.MaxRequestBytes)
	health := &cappedHealth{StaticChecker: grpchealth.NewStaticChecker(tokenv1connect.TokenServiceName), slots: make(chan struct{}, cfg.MaxHealthWatchers)}
	mux.Handle(grpchealth.NewHandler(health, bounded))
	reflector := grpcreflect.NewStaticReflector(tokenv1connect.TokenServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, bounded))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, bounded))

	// The standard OAuth endpoints, for off-the-shelf clients and resource
	// servers (oauth.go). The guard lets every request reach them; they
	// authenticate the client themselves.
	o := &oauthServer{svc: svc, guard: cfg.Guard, public: cfg.PublicURL, maxBytes: int64(cfg.MaxRequestBytes)}
	mux.HandleFunc("GET "+auth.PathOAuthMetadata, o.metadata)
	mux.HandleFunc(auth.PathOAuthToken, o.token)
	mux.HandleFunc(auth.PathOAuthRevoke, o.revoke)
	mux.HandleFunc(auth.PathOAuthIntrospect, o.introspect)

	mux.HandleFunc("GET "+auth.PathJWKS, func(w http.ResponseWriter, r *http.Request) {
		body, err := json.Marshal(struct {
			Keys []signing.JWK `json:"keys"`
		}{cfg.Keys.JWKS()})
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		// The JWKS is the same on every replica (one projection of one
		// log), so is its ETag: a cache may revalidate against any.
		sum := sha256.Sum256(body)
		etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
		w.Header().Set("ETag", etag)
		w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(cfg.JWKSMaxAge/time.Second)))
		w.Header().Set("Content-Type", "application/jwk-set+json")
		if inm := r.Header.Get("If-None-Match"); inm != "" && strings.Contains(inm, etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = w.Write(body)
	})
	if cfg.Projections != nil {
		mux.HandleFunc("GET /projections/digest", func(w http.ResponseWriter, _ *http.Request) {
			seq, digest := cfg.Projections.Snapshot()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(struct {
				Seq    uint64 `json:"seq"`
				Digest string `json:"digest"`
			}{seq, digest})
		})
	}
	if cfg.SharedSignals != nil {
		cfg.SharedSignals.Register(mux)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !cfg.Ready() {
			http.Error(w, "projections catching up", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if cfg.Metrics != nil && !cfg.NoMetricsEndpoint {
		mux.Handle("GET /metrics", cfg.Metrics.Handler())
	}
	var inner http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Bound every body, also of paths Connect does not serve.
		r.Body = http.MaxBytesReader(w, r.Body, int64(cfg.MaxRequestBytes)+1024)
		mux.ServeHTTP(w, r)
	})
	if cfg.Guard != nil {
		inner = cfg.Guard.Middleware(inner)
	}
	hd := &Handler{Handler: withCorrelationID(inner), health: health}
	hd.SetServing(false)
	return hd
}

func normalizeAll(uris []string) []string {
	var out []string
	for _, u := range uris {
		if n, err := dpop.NormalizeURI(u); err == nil {
			out = append(out, n)
		}
	}
	return out
}
