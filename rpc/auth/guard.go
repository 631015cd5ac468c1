package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/rpc/refusal"
)

// Reason is why a call was refused, as counted by an Observer.
type Reason string

// The reasons of a refusal.
const (
	ReasonUnauthenticated  Reason = "unauthenticated"
	ReasonPermissionDenied Reason = "permission_denied"
	ReasonClientNotAllowed Reason = "client_not_allowed"
	ReasonRateLimited      Reason = "rate_limited"
)

// Reasons returns every Reason, so that counters can exist from start-up.
func Reasons() []Reason {
	return []Reason{ReasonUnauthenticated, ReasonPermissionDenied, ReasonClientNotAllowed, ReasonRateLimited}
}

// UnknownPath is the procedure label of a refused request for a path that
// is in no policy table (attackers choose paths; labels stay bounded).
const UnknownPath = "unknown"

// Observer counts refused calls. Implementations must be safe for
// concurrent use.
type Observer interface {
	// Refused reports one refused call of procedure (a full procedure
	// name, an HTTP path of the policy, or UnknownPath).
	Refused(procedure string, reason Reason)
}

// Config configures a Guard. The zero value of every field but Policy
// selects the documented default.
type Config struct {
	// Policy holds the callers. Required unless Disabled.
	Policy *Policy
	// RefuseAPIKeys refuses every API key, so that only client
	// certificates authenticate (AUTH_MODE=mtls): a key presented is an
	// unknown credential, whatever the policy file holds. Default false.
	RefuseAPIKeys bool
	// Disabled turns authentication, authorization and rate limits off
	// (AUTH_MODE=none): every call is allowed as an identity of KindNone.
	// Security: only for a service that listens on loopback (IsLoopback);
	// the caller enforces that and logs a warning. The middleware then
	// refuses a request whose Host header is not a loopback name or
	// address (LoopbackHost, ErrNotLoopbackHost), so that a web page whose
	// name an attacker rebinds to 127.0.0.1 cannot call the service from a
	// developer's browser (DNS rebinding).
	Disabled bool
	// PublicPaths are HTTP paths, besides /.well-known/jwks.json, /healthz,
	// /readyz and the gRPC health check, that anyone may call, for example
	// "/metrics" on a port that only a scraper reaches. Default none.
	PublicPaths []string
	// AssertionReplay, if set, claims the jti of each private_key_jwt
	// client assertion for its lifetime, so that one is accepted once
	// (tokend passes dpop.LogReplayStore: a claim in the log, which of any
	// number of replicas exactly one wins, keyed by the thumbprint of the
	// client's key). Default: assertions are not checked for replay.
	AssertionReplay dpop.ReplayStore
	// Observer, if set, counts refused calls.
	Observer Observer
	// Logger receives the details of refused calls. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock of key expiry and rate limits. Default time.Now.
	Now func() time.Time
	// MaxCallers bounds the rate limiters kept. Default 20,000.
	MaxCallers int
}

// Guard authenticates callers and enforces the policy: as an HTTP
// middleware (Middleware) around the whole handler, and as a Connect
// interceptor (Interceptor) on the service. It is safe for concurrent use.
//
// The middleware reads the verified client certificate (Connect does not
// expose TLS to interceptors), enforces the policy of the paths that are
// not RPCs of the service, and makes a first, coarse check of the RPCs (an
// identity with a role that may call the procedure at all). The interceptor
// makes the exact check, which may depend on the request (RevokeToken by
// subject, a client_id the caller may not use), applies the caller's rate
// limit and records the caller as the actor of the events the call
// appends. Without the middleware the interceptor still authenticates API
// keys, and refuses certificate callers; without the interceptor the
// middleware still keeps out callers without a suitable role.
type Guard struct {
	policy     *Policy
	disabled   bool
	noAPIKeys  bool
	procedures map[string]rule
	paths      map[string]rule
	limiters   *limiters
	obs        Observer
	log        *slog.Logger
	logLimit   *rate.Limiter // refusals logged at Info: a flood of bad credentials is counted, not all logged
	now        func() time.Time
	errWriter  *connect.ErrorWriter
	replay     dpop.ReplayStore
}

// New returns a Guard. It returns an error if Policy is nil and Disabled is
// false.
func New(cfg Config) (*Guard, error) {
	if cfg.Policy == nil && !cfg.Disabled {
		return nil, errors.New("auth: a policy is required unless authentication is disabled")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxCallers <= 0 {
		cfg.MaxCallers = 2 * maxPolicyEntries
	}
	return &Guard{
		policy:     cfg.Policy,
		disabled:   cfg.Disabled,
		noAPIKeys:  cfg.RefuseAPIKeys,
		procedures: procedureRules(),
		paths:      httpRules(cfg.PublicPaths),
		limiters:   newLimiters(cfg.MaxCallers),
		obs:        cfg.Observer,
		log:        cfg.Logger,
		logLimit:   rate.NewLimiter(refusalLogRate, refusalLogBurst),
		now:        cfg.Now,
		// A plain GET (of /metrics, say) is not a Connect call unless it
		// says so.
		errWriter: connect.NewErrorWriter(connect.WithRequireConnectProtocolHeader()),
		replay:    cfg.AssertionReplay,
	}, nil
}

// Interceptor returns the Connect interceptor (unary and streaming
// handlers; clients pass through).
func (g *Guard) Interceptor() connect.Interceptor { return interceptor{g} }

type interceptor struct{ g *Guard }

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx, err := i.g.check(ctx, req.Spec().Procedure, req.Header(), req.Peer().Addr, req.Any())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		// The request message is not read yet: rules that depend on it
		// give their strictest answer.
		procedure, peer := conn.Spec().Procedure, conn.Peer().Addr
		ctx, err := i.g.check(ctx, procedure, conn.RequestHeader(), peer, nil)
		if err != nil {
			return err
		}
		bound, stop := i.g.bindCaller(ctx, procedure, conn.RequestHeader())
		defer stop()
		err = next(bound, conn)
		if cause := context.Cause(bound); errors.Is(cause, ErrCallerWithdrawn) {
			id, _ := FromContext(ctx)
			reason := ReasonUnauthenticated
			if errors.Is(cause, ErrPermissionDenied) {
				reason = ReasonPermissionDenied
			}
			return i.g.refuse(ctx, procedure, reason, cause, id, peer)
		}
		return err
	}
}

// bindCaller returns a context for a stream of the authenticated caller
// of ctx that ends, with a cause wrapping ErrCallerWithdrawn, as soon as
// the caller would no longer be admitted to procedure: checked again each
// time the policy is replaced and when its credential expires. A stream
// outlives the check made when it began; without this, a key removed from
// the policy, or expired, would keep its streams for as long as the
// client holds them. stop must be called when the stream ends.
func (g *Guard) bindCaller(ctx context.Context, procedure string, header http.Header) (context.Context, func()) {
	id, ok := FromContext(ctx)
	if g.disabled || !ok || id.Kind == KindNone {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			pol := g.policy.current()
			again, err := g.admits(ctx, pol, procedure, header, id)
			if err != nil {
				cancel(fmt.Errorf("%w: %w", ErrCallerWithdrawn, err))
				return
			}
			if !g.awaitChange(ctx, pol, again.Expires) {
				return
			}
		}
	}()
	return ctx, func() {
		cancel(nil)
		<-done
	}
}

// awaitChange waits until pol is replaced or expires passes (zero:
// never), and reports false if ctx ended first.
func (g *Guard) awaitChange(ctx context.Context, pol *policy, expires time.Time) bool {
	var expiry <-chan time.Time
	if !expires.IsZero() {
		t := time.NewTimer(expires.Sub(g.now()))
		defer t.Stop()
		expiry = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-pol.replaced:
	case <-expiry:
	}
	return true
}

// admits returns the caller as pol admits it now to procedure with the
// credential of header (and of ctx's certificate), or an error if pol no
// longer does: the same identity as when the call began (id), unexpired,
// with a role that may call procedure.
func (g *Guard) admits(ctx context.Context, pol *policy, procedure string, header http.Header, id Identity) (Identity, error) {
	again, err := g.authenticateWith(ctx, pol, header)
	if err != nil {
		return again, err
	}
	if again.Actor() != id.Actor() {
		return again, fmt.Errorf("%w: the credential now names %q", ErrUnknownCredential, again.Actor())
	}
	if r, known := g.procedures[procedure]; !known || !hasAny(again, r.rolesFor(nil)) {
		return again, ErrPermissionDenied
	}
	return again, nil
}

// check enforces the policy on one call and returns the context of the
// handler: with the identity, and the actor for the event log.
func (g *Guard) check(ctx context.Context, procedure string, header http.Header, peer string, msg any) (context.Context, error) {
	if g.disabled {
		if id, ok := FromContext(ctx); ok && id.Kind == KindNone {
			return ctx, nil // the middleware's: another copy would cost two allocations a call
		}
		return NewContext(ctx, Identity{Kind: KindNone}), nil
	}
	r, known := g.procedures[procedure]
	if known && r.public {
		return NewContext(ctx, Identity{Kind: KindNone}), nil
	}
	id, ok := FromContext(ctx) // authenticated by the middleware
	if !ok || id.Kind == KindNone {
		var err error
		if id, err = g.authenticate(ctx, header); err != nil {
			return ctx, g.refuse(ctx, procedure, ReasonUnauthenticated, err, id, peer)
		}
		ctx = NewContext(ctx, id)
	}
	ctx = eventlog.WithActor(ctx, id.Actor())
	if !g.limiters.allow(id.Actor(), g.limitOf(id), g.now()) {
		return ctx, g.refuse(ctx, procedure, ReasonRateLimited, ErrRateLimited, id, peer)
	}
	if !known {
		return ctx, g.refuse(ctx, procedure, ReasonPermissionDenied, fmt.Errorf("%w: procedure not in the policy", ErrPermissionDenied), id, peer)
	}
	if !hasAny(id, r.rolesFor(msg)) {
		return ctx, g.refuse(ctx, procedure, ReasonPermissionDenied, ErrPermissionDenied, id, peer)
	}
	if r.clientBound {
		m, ok := msg.(clientIDer)
		if !ok || !id.MayUseClient(m.GetClientId()) {
			return ctx, g.refuse(ctx, procedure, ReasonClientNotAllowed, ErrClientNotAllowed, id, peer)
		}
	}
	return ctx, nil
}

// Middleware returns next behind the guard (see Guard).
func (g *Guard) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if r.TLS != nil {
			ctx = withPeerCertificate(ctx, r.TLS)
		}
		path := r.URL.Path
		rl, isRPC := g.procedures[path]
		if !isRPC {
			var ok bool
			if rl, ok = g.paths[path]; !ok {
				path = UnknownPath
			}
		}
		if g.disabled {
			if !LoopbackHost(r.Host) {
				// A page of a foreign name rebound to 127.0.0.1 reaches
				// the port from the victim's browser: it would call every
				// RPC unauthenticated.
				g.refuseHTTP(w, r, path, ReasonPermissionDenied, fmt.Errorf("%w: %q", ErrNotLoopbackHost, r.Host), Identity{Kind: KindNone})
				return
			}
			next.ServeHTTP(w, r.WithContext(NewContext(ctx, Identity{Kind: KindNone})))
			return
		}
		if rl.public || rl.endpoint {
			next.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		id, err := g.authenticate(ctx, r.Header)
		if err != nil {
			g.refuseHTTP(w, r, path, ReasonUnauthenticated, err, id)
			return
		}
		ctx = NewContext(ctx, id)
		if !isRPC {
			// RPCs are rate-limited by the interceptor, once.
			if !g.limiters.allow(id.Actor(), g.limitOf(id), g.now()) {
				g.refuseHTTP(w, r.WithContext(ctx), path, ReasonRateLimited, ErrRateLimited, id)
				return
			}
		}
		if !hasAny(id, rl.anyRoles()) {
			g.refuseHTTP(w, r.WithContext(ctx), path, ReasonPermissionDenied, ErrPermissionDenied, id)
			return
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// authenticate returns the caller of a request. An API key in the
// Authorization header takes precedence over a client certificate: a
// caller behind a mesh that terminates mTLS for it still names itself. A
// presented credential that fails is never replaced by the other one.
func (g *Guard) authenticate(ctx context.Context, header http.Header) (Identity, error) {
	return g.authenticateWith(ctx, g.policy.current(), header)
}

func (g *Guard) authenticateWith(ctx context.Context, pol *policy, header http.Header) (Identity, error) {
	if hs := header.Values("Authorization"); len(hs) > 0 {
		if len(hs) > 1 {
			return Identity{}, fmt.Errorf("%w: several Authorization headers", ErrUnknownCredential)
		}
		key, ok := bearer(hs[0])
		if !ok {
			return Identity{}, fmt.Errorf("%w: not a bearer API key", ErrUnknownCredential)
		}
		if g.noAPIKeys {
			return Identity{}, fmt.Errorf("%w: API keys are not accepted, only client certificates", ErrUnknownCredential)
		}
		return pol.lookupKey(key, g.now())
	}
	if pc, ok := ctx.Value(peerKey{}).(peerCertificate); ok {
		if pc.err != nil {
			return Identity{}, pc.err
		}
		id, ok := pol.mtls[pc.identity]
		if !ok {
			return Identity{Kind: KindMTLS, Subject: pc.identity}, fmt.Errorf("%w: certificate identity not in the policy", ErrUnknownCredential)
		}
		if !g.now().Before(pc.notAfter) {
			// Verified at the handshake; a long stream outlives it.
			return id, fmt.Errorf("%w: client certificate expired", ErrExpiredCredential)
		}
		id.Expires = pc.notAfter
		return id, nil
	}
	return Identity{}, ErrNoCredential
}

func (g *Guard) limitOf(id Identity) RateLimit {
	if id.RateLimit != nil {
		return *id.RateLimit
	}
	return g.policy.current().defaultLimit
}

// refusalLogRate and refusalLogBurst bound the refusals logged at Info.
const (
	refusalLogRate  = 20
	refusalLogBurst = 100
)

// refuse logs and counts a refusal and returns the error for the caller.
func (g *Guard) refuse(ctx context.Context, procedure string, reason Reason, err error, id Identity, peer string) error {
	if g.obs != nil {
		g.obs.Refused(procedure, reason)
	}
	level := slog.LevelInfo
	if reason == ReasonRateLimited || !g.logLimit.Allow() {
		// A flood (over a caller's limit, or of bad credentials, which
		// have no caller to limit) must not flood the log: every
		// refusal is counted in the metrics, and logged at Info up to
		// refusalLogRate a second.
		level = slog.LevelDebug
	}
	g.log.LogAttrs(ctx, level, "call refused",
		slog.String("procedure", procedure), slog.String("reason", string(reason)),
		slog.String("caller", id.Name), slog.String("credential", string(id.Kind)), slog.String("subject", id.Subject),
		slog.String("peer", peer), slog.String("correlation_id", eventlog.CorrelationID(ctx)),
		slog.String("error", err.Error()))
	return refusalOf(err)
}

func (g *Guard) refuseHTTP(w http.ResponseWriter, r *http.Request, path string, reason Reason, err error, id Identity) {
	ce := g.refuse(r.Context(), path, reason, err, id, r.RemoteAddr).(*connect.Error)
	if ce.Code() == connect.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tokend"`)
	}
	if g.errWriter.IsSupported(r) {
		_ = g.errWriter.Write(w, r, ce)
		return
	}
	status := http.StatusForbidden
	switch ce.Code() {
	case connect.CodeUnauthenticated:
		status = http.StatusUnauthorized
	case connect.CodeResourceExhausted:
		status = http.StatusTooManyRequests
	}
	http.Error(w, ce.Message(), status)
}

// refusalOf maps a sentinel error to the Connect error of a refused call
// (Refusals); an error the table does not name is a denial, so that the
// guard fails closed.
func refusalOf(err error) error {
	t := append(Refusals(), refusal.Rule{Code: connect.CodePermissionDenied, OAuth: refusal.UnauthorizedClient, Public: publicDenied})
	return t.Error(err)
}

type peerKey struct{}

// peerCertificate is the identity of a verified client certificate.
type peerCertificate struct {
	identity string
	notAfter time.Time
	err      error
}

// withPeerCertificate records the identity of the verified client
// certificate of cs, if any (CertificateIdentity). Only chains the server
// verified count.
func withPeerCertificate(ctx context.Context, cs *tls.ConnectionState) context.Context {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ctx
	}
	var pc peerCertificate
	leaf := cs.VerifiedChains[0][0]
	pc.identity, pc.err = CertificateIdentity(leaf)
	pc.notAfter = leaf.NotAfter
	return context.WithValue(ctx, peerKey{}, pc)
}
