package rpc

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/breaker"
)

// Metrics holds the service's Prometheus metrics. Every label takes values
// from a fixed set, and every series of a known label value exists from
// start-up at 0. It implements issuer.Observer and eventlog.Observer.
type Metrics struct {
	Registry *prometheus.Registry

	issued        *prometheus.CounterVec
	refreshed     *prometheus.CounterVec
	revoked       *prometheus.CounterVec
	security      *prometheus.CounterVec
	dpop          *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	oauth         *prometheus.CounterVec
	appendLatency prometheus.Histogram
	appends       *prometheus.CounterVec
	badRecords    *prometheus.CounterVec
	forged        prometheus.Counter
	fallback      *prometheus.CounterVec
	breakerOpen   *prometheus.GaugeVec // by breaker; the unlabelled gauge is computed from it
	breakers      map[string]*atomic.Bool
	cryptoOps     *prometheus.CounterVec
	cryptoLatency *prometheus.HistogramVec
	kmsOps        *prometheus.CounterVec
	projectionLag prometheus.GaugeFunc
	authRefused   *prometheus.CounterVec
	cpLoads       *prometheus.CounterVec
	cpSaves       *prometheus.CounterVec
	cacheOps      *prometheus.CounterVec
	held          atomic.Pointer[func() float64]

	// The children of the vectors a call observes, resolved once for
	// every known label value: observing one is then a read of a map that
	// never changes, not a hash of the labels and a lookup under the
	// vector's lock (0.4% of the CPU of a GenerateTokens call in a perf
	// profile). A label value outside the known set goes to the vector.
	latencyOf  map[string]prometheus.Observer
	issuedOf   map[[2]string]prometheus.Counter
	appendsOf  map[string]prometheus.Counter
	cacheOpsOf map[[2]string]prometheus.Counter
}

var _ issuer.Observer = (*Metrics)(nil)
var _ eventlog.Observer = (*Metrics)(nil)
var _ auth.Observer = (*Metrics)(nil)
var _ projections.CacheObserver = (*Metrics)(nil)

// Security event types counted by token_service_security_events_total
// besides the issuer's (issuer.SecurityRefreshReuse and
// issuer.SecurityDPoPMismatch).
const (
	// SecurityDPoPReplay is a DPoP proof presented again (its jti was
	// used; RFC 9449 §11.1).
	SecurityDPoPReplay = "dpop_replay"
	// SecurityRevocation is one family revoked, whatever the reason.
	SecurityRevocation = "revocation"
	// SecurityForgedEvent is a log record refused as forged or tampered
	// with (eventlog.ErrForged).
	SecurityForgedEvent = "forged_event"
)

// SecurityEvents lists every event_type of
// token_service_security_events_total.
var SecurityEvents = []string{issuer.SecurityRefreshReuse, issuer.SecurityDPoPMismatch, SecurityDPoPReplay, SecurityRevocation, SecurityForgedEvent}

// The circuit breakers, as token_service_crypto_circuit_breaker_open_by_breaker
// names them.
const (
	// BreakerSigning is the breaker in front of the remote signing
	// backend (awskms, cryptosvc or pkcs11).
	BreakerSigning = "signing"
	// BreakerEnvelope is the breaker in front of the crypto service's
	// wrapping of data keys (CRYPTO_ENCRYPTION_ENABLED).
	BreakerEnvelope = "envelope"
)

// Breakers lists every breaker label.
var Breakers = []string{BreakerSigning, BreakerEnvelope}

var procedures = []string{
	tokenv1connect.TokenServiceGenerateTokensProcedure,
	tokenv1connect.TokenServiceRefreshTokensProcedure,
	tokenv1connect.TokenServiceRevokeTokenProcedure,
	tokenv1connect.TokenServiceGetJWKSProcedure,
	tokenv1connect.TokenServiceValidateDPoPProcedure,
	tokenv1connect.TokenServiceRotateSigningKeyProcedure,
	tokenv1connect.TokenServiceListSigningKeysProcedure,
	tokenv1connect.TokenServiceIntrospectTokenProcedure,
	tokenv1connect.TokenServiceListFamiliesProcedure,
}

// NewMetrics registers the metrics. lag, if not nil, reports the
// projection lag in records.
func NewMetrics(lag func() float64) *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: r,
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_tokens_issued_total", Help: "Access tokens issued, by GenerateTokens and by RefreshTokens (rotation and grace), each with its refresh token; token_type is Bearer or DPoP, algorithm the JWS alg that signed it.",
		}, []string{"token_type", "algorithm"}),
		refreshed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_tokens_refreshed_total", Help: "Refresh attempts by outcome.",
		}, []string{"status"}),
		revoked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_tokens_revoked_total", Help: "Families revoked, by reason.",
		}, []string{"reason"}),
		security: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_security_events_total", Help: "Security events: refresh_token_reuse, dpop_key_mismatch, dpop_replay (a DPoP jti used again), revocation (one per family revoked), forged_event (a log record refused as forged).",
		}, []string{"event_type"}),
		dpop: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_dpop_validations_total", Help: "DPoP proof validations by outcome and failed check.",
		}, []string{"status", "error_type"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "token_service_grpc_latency_seconds", Help: "RPC latency by procedure.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method"}),
		oauth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_oauth_requests_total", Help: "Requests to the standard OAuth endpoints (token, revocation, introspection) by endpoint path and OAuth error code (\"\" when answered).",
		}, []string{"endpoint", "error"}),
		appendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "token_service_eventlog_append_seconds", Help: "Event log append latency.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, 1},
		}),
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_eventlog_appends_total", Help: "Event log appends by result (ok, conflict, error).",
		}, []string{"result"}),
		badRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_projection_bad_records_total", Help: "Log records a projection could not decode and skipped, by projection (replica: the in-memory projections; families: the families read model).",
		}, []string{"projection"}),
		forged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "token_service_eventlog_forged_records_total",
			Help: "Log records refused as forged: no valid MAC under the service's ENCRYPTION_KEY, or an authentic event published again out of its place. Each counted once per replica.",
		}),
	}
	m.fallback = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "token_service_crypto_fallback_total", Help: "Operations done with a local key because the remote backend was unavailable (sign: the fallback signing key; seal: ENCRYPTION_KEY instead of a data key of the crypto service).",
	}, []string{"operation"})
	m.breakerOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "token_service_crypto_circuit_breaker_open_by_breaker", Help: "1 while this circuit breaker is open: signing (the remote signing backend) or envelope (the crypto service's data-key wrapping).",
	}, []string{"breaker"})
	m.breakers = map[string]*atomic.Bool{}
	for _, b := range Breakers {
		m.breakers[b] = new(atomic.Bool)
		m.breakerOpen.WithLabelValues(b)
	}
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "token_service_crypto_circuit_breaker_open", Help: "1 while any circuit breaker in front of a remote crypto backend is open (token_service_crypto_circuit_breaker_open_by_breaker tells which).",
	}, func() float64 {
		for _, open := range m.breakers {
			if open.Load() {
				return 1
			}
		}
		return 0
	}))
	m.cryptoOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "token_service_crypto_operations_total", Help: "Remote backend operations (sign; encrypt and decrypt of data keys) by outcome (ok, error, rejected).",
	}, []string{"operation", "status"})
	m.cryptoLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "token_service_crypto_latency_seconds", Help: "Remote signing backend latency.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"operation"})
	m.kmsOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "token_service_kms_operations_total", Help: "AWS KMS API calls, every one tokend makes (operation: the AWS name, CreateKey, GetPublicKey, Sign, ScheduleKeyDeletion, …), by outcome (ok, error). A call the breaker refused never reached KMS: see token_service_crypto_operations_total{status=\"rejected\"}.",
	}, []string{"operation", "status"})
	// Procedures and paths come from the policy table, so a path an
	// attacker makes up is counted as "unknown", not as a new series.
	m.authRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "token_service_auth_refused_total", Help: "Calls refused by caller authentication, authorization or rate limits, by procedure (or HTTP path, or unknown) and reason.",
	}, []string{"procedure", "reason"})
	m.cpLoads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "token_service_projection_checkpoint_loads_total",
		Help: "Start-ups by how the projections were built: restored from a checkpoint, or replayed in full because it was missing, stale, corrupt or could not be read (failed).",
	}, []string{"outcome"})
	m.cpSaves = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "token_service_projection_checkpoint_saves_total", Help: "Projection checkpoints written (ok) or failed (error), ticks included.",
	}, []string{"result"})
	m.cacheOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "token_service_cache_operations_total",
		Help: "Operations on the families read model, the sealed KV bucket that is the specification's encrypted cache: read (ok, miss, invalid: a value that does not open, never served; error), write (ok, conflict, error), delete (the bucket, rebuilt after an upgrade).",
	}, []string{"operation", "status"})
	r.MustRegister(m.fallback, m.breakerOpen, m.cryptoOps, m.cryptoLatency, m.kmsOps, m.authRefused, m.cpLoads, m.cpSaves, m.cacheOps)
	m.cacheOpsOf = map[[2]string]prometheus.Counter{}
	for _, s := range projections.CacheSeries() {
		m.cacheOpsOf[[2]string{s[0], s[1]}] = m.cacheOps.WithLabelValues(s[0], s[1])
	}
	for _, o := range projections.LoadOutcomes {
		m.cpLoads.WithLabelValues(o)
	}
	m.cpSaves.WithLabelValues("ok")
	m.cpSaves.WithLabelValues("error")
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "token_service_projection_entries", Help: "Entries the in-memory projections hold: families that can still be used, and revocations some access token may still need.",
	}, func() float64 {
		if f := m.held.Load(); f != nil {
			return (*f)()
		}
		return 0
	}))
	for _, p := range auth.RefusalLabels() {
		for _, reason := range auth.Reasons() {
			m.authRefused.WithLabelValues(p, string(reason))
		}
	}
	m.fallback.WithLabelValues("sign")
	m.fallback.WithLabelValues("seal")
	for _, op := range []string{"sign", "encrypt", "decrypt"} {
		m.cryptoLatency.WithLabelValues(op)
		for _, st := range []string{"ok", "error", "rejected"} {
			m.cryptoOps.WithLabelValues(op, st)
		}
	}
	for _, op := range append(slices.Clone(awskms.Operations), awskms.OtherOperation) {
		for _, st := range []string{"ok", "error"} {
			m.kmsOps.WithLabelValues(op, st)
		}
	}
	r.MustRegister(m.issued, m.refreshed, m.revoked, m.security, m.dpop, m.latency, m.oauth, m.appendLatency, m.appends, m.badRecords, m.forged)
	if lag != nil {
		m.projectionLag = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "token_service_projection_lag_records", Help: "Records the projections have yet to apply.",
		}, lag)
		r.MustRegister(m.projectionLag)
	}
	m.issuedOf = map[[2]string]prometheus.Counter{}
	for _, tt := range []string{issuer.TokenTypeBearer, issuer.TokenTypeDPoP} {
		for _, a := range signing.Algorithms {
			m.issuedOf[[2]string{tt, string(a)}] = m.issued.WithLabelValues(tt, string(a))
		}
	}
	for _, s := range []string{issuer.StatusSuccess, issuer.StatusGrace, issuer.StatusReuse, issuer.StatusInvalid, issuer.StatusError} {
		m.refreshed.WithLabelValues(s)
	}
	for _, r := range issuer.ReasonLabels {
		m.revoked.WithLabelValues(r)
	}
	for _, e := range SecurityEvents {
		m.security.WithLabelValues(e)
	}
	m.dpop.WithLabelValues("valid", "none")
	for _, l := range append(dpop.Labels, "invalid_token") {
		if l != "none" {
			m.dpop.WithLabelValues("invalid", l)
		}
	}
	m.latencyOf = map[string]prometheus.Observer{}
	for _, p := range procedures {
		m.latencyOf[p] = m.latency.WithLabelValues(p)
	}
	for _, p := range oauthEndpoints {
		m.latencyOf[p] = m.latency.WithLabelValues(p)
		m.oauth.WithLabelValues(p, "")
	}
	m.appendsOf = map[string]prometheus.Counter{}
	for _, res := range []string{"ok", "conflict", "error"} {
		m.appendsOf[res] = m.appends.WithLabelValues(res)
	}
	for _, p := range []string{"replica", "families", "feed"} {
		m.badRecords.WithLabelValues(p)
	}
	return m
}

// Issued implements issuer.Observer.
func (m *Metrics) Issued(tokenType, algorithm string) {
	if c, ok := m.issuedOf[[2]string{tokenType, algorithm}]; ok {
		c.Inc()
		return
	}
	m.issued.WithLabelValues(tokenType, algorithm).Inc()
}

// Refreshed implements issuer.Observer.
func (m *Metrics) Refreshed(status string) { m.refreshed.WithLabelValues(status).Inc() }

// Revoked implements issuer.Observer: each family revoked is also a
// security event.
func (m *Metrics) Revoked(reason string, n int) {
	m.revoked.WithLabelValues(reason).Add(float64(n))
	m.security.WithLabelValues(SecurityRevocation).Add(float64(n))
}

// SecurityEvent implements issuer.Observer.
func (m *Metrics) SecurityEvent(t string) { m.security.WithLabelValues(t).Inc() }

// AppendDone implements eventlog.Observer.
func (m *Metrics) AppendDone(d time.Duration, err error) {
	m.appendLatency.Observe(d.Seconds())
	switch {
	case err == nil:
		m.appendsOf["ok"].Inc()
	case errors.Is(err, eventlog.ErrConflict):
		m.appendsOf["conflict"].Inc()
	default:
		m.appendsOf["error"].Inc()
	}
}

// dpopValidated counts one proof check; err nil is a valid proof. Safe on
// a nil *Metrics.
func (m *Metrics) dpopValidated(err error) {
	if m == nil {
		return
	}
	switch {
	case err == nil:
		m.dpop.WithLabelValues("valid", "none").Inc()
	case errors.Is(err, errInvalidToken):
		m.dpop.WithLabelValues("invalid", "invalid_token").Inc()
	default:
		m.dpop.WithLabelValues("invalid", dpop.Label(err)).Inc()
	}
	switch {
	case errors.Is(err, dpop.ErrReplay):
		m.security.WithLabelValues(SecurityDPoPReplay).Inc()
	case errors.Is(err, dpop.ErrKeyMismatch):
		// A proof of another key than the one the token is bound to. The
		// issuer counts the refresh of a bound family itself (the proof
		// is valid there; the family decides).
		m.security.WithLabelValues(issuer.SecurityDPoPMismatch).Inc()
	}
}

// FallbackSigned implements issuer.Observer.
func (m *Metrics) FallbackSigned() { m.fallback.WithLabelValues("sign").Inc() }

// FallbackSealed counts a value sealed under the local key because the
// crypto service could not wrap a data key (envelope encryption).
func (m *Metrics) FallbackSealed() { m.fallback.WithLabelValues("seal").Inc() }

// BreakerObserver returns the observer of breaker name (one of Breakers;
// another name counts as BreakerSigning).
func (m *Metrics) BreakerObserver(name string) breaker.Observer {
	if m.breakers[name] == nil {
		name = BreakerSigning
	}
	return breakerMetrics{m: m, name: name}
}

type breakerMetrics struct {
	m    *Metrics
	name string
}

func (b breakerMetrics) Call(op, status string, d time.Duration) {
	b.m.cryptoOps.WithLabelValues(op, status).Inc()
	b.m.cryptoLatency.WithLabelValues(op).Observe(d.Seconds())
}

func (b breakerMetrics) StateChanged(open bool) {
	b.m.breakers[b.name].Store(open)
	if open {
		b.m.breakerOpen.WithLabelValues(b.name).Set(1)
	} else {
		b.m.breakerOpen.WithLabelValues(b.name).Set(0)
	}
}

// KMSCall counts one AWS KMS API call (awskms.WithObserver): operation is
// one of awskms.Operations or awskms.OtherOperation, err nil on success.
func (m *Metrics) KMSCall(operation string, err error) {
	status := "ok"
	if err != nil {
		status = "error"
	}
	m.kmsOps.WithLabelValues(operation, status).Inc()
}

// Refused implements auth.Observer: one call refused by the caller policy.
func (m *Metrics) Refused(procedure string, reason auth.Reason) {
	m.authRefused.WithLabelValues(procedure, string(reason)).Inc()
}

// CheckpointLoaded counts a start-up by how the projections were built
// (projections.LoadOutcomes).
func (m *Metrics) CheckpointLoaded(outcome string) { m.cpLoads.WithLabelValues(outcome).Inc() }

// CheckpointSaved counts a checkpoint written or failed.
func (m *Metrics) CheckpointSaved(err error) {
	if err != nil {
		m.cpSaves.WithLabelValues("error").Inc()
		return
	}
	m.cpSaves.WithLabelValues("ok").Inc()
}

// CacheOperation implements projections.CacheObserver: one operation on
// the families read model.
func (m *Metrics) CacheOperation(operation, status string) {
	if c, ok := m.cacheOpsOf[[2]string{operation, status}]; ok {
		c.Inc()
		return
	}
	m.cacheOps.WithLabelValues(operation, status).Inc()
}

// ObserveHeld sets what the gauge token_service_projection_entries
// reads: the entries the in-memory projections hold.
func (m *Metrics) ObserveHeld(held func() float64) { m.held.Store(&held) }

// Handler serves the metrics (GET /metrics), for a listener of its own.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// BadRecord counts a log record a projection skipped: "replica" (the
// in-memory projections), "families" (the read model) or "feed" (the
// subscriber feed's writer).
func (m *Metrics) BadRecord(projection string) { m.badRecords.WithLabelValues(projection).Inc() }

// Forged counts a log record refused as forged (eventlog.ErrForged), also
// as a security event.
func (m *Metrics) Forged() {
	m.forged.Inc()
	m.security.WithLabelValues(SecurityForgedEvent).Inc()
}

// oauthEndpoints are the paths of the standard OAuth endpoints, labels of
// the latency histogram next to the procedures.
var oauthEndpoints = []string{auth.PathOAuthToken, auth.PathOAuthRevoke, auth.PathOAuthIntrospect}

// oauthRequest counts one request to an OAuth endpoint answered with
// oauthCode ("" for success) and observes its latency. Safe on a nil
// Metrics. The code is one of the service's OAuth codes, a bounded set.
func (m *Metrics) oauthRequest(path, oauthCode string, start time.Time) {
	if m == nil {
		return
	}
	m.oauth.WithLabelValues(path, oauthCode).Inc()
	m.observeLatency(path, start)
}

// observeLatency observes the latency of a call of procedure (or OAuth
// endpoint path) that began at start.
func (m *Metrics) observeLatency(procedure string, start time.Time) {
	o, ok := m.latencyOf[procedure]
	if !ok {
		o = m.latency.WithLabelValues(procedure)
	}
	o.Observe(time.Since(start).Seconds())
}

// interceptor observes RPC latency per procedure (a bounded label: only
// known procedures reach the handlers).
func (m *Metrics) interceptor() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			resp, err := next(ctx, req)
			m.observeLatency(req.Spec().Procedure, start)
			return resp, err
		}
	}
}
