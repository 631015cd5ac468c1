package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/refusal"
)

// The standard OAuth endpoints (RFC 8414 metadata, RFC 6749 §6 refresh,
// RFC 7009 revocation, RFC 7662 introspection) are the same service as
// the Connect RPCs in another wire format: each decodes its form,
// authenticates the client (auth.Guard.AuthenticateClient), calls the
// same issuer decisions as RefreshTokens, RevokeToken and IntrospectToken,
// and answers in the RFC's JSON, with refusals from the one table
// (Refusals).
type oauthServer struct {
	svc      *service
	guard    *auth.Guard // nil: every client is taken at its word
	public   PublicURL
	maxBytes int64
}

// Error codes of the OAuth endpoints beyond refusal's (RFC 6749 §5.2,
// RFC 7009 §2.2.1).
const (
	unsupportedGrantType = "unsupported_grant_type"
	grantRefreshToken    = "refresh_token"
)

// oauthFailure is a refusal an endpoint decided itself, before any domain
// call: an OAuth code, what the client reads, and the HTTP status.
type oauthFailure struct {
	code, desc string
	status     int
}

func (f *oauthFailure) Error() string { return f.code + ": " + f.desc }

func badRequest(code, desc string) *oauthFailure {
	return &oauthFailure{code: code, desc: desc, status: http.StatusBadRequest}
}

// readForm reads a POSTed application/x-www-form-urlencoded body of at
// most maxBytes. Parameters must not repeat (RFC 6749 §3.1); a parameter
// without a value is as if omitted. Parameters of the query string are
// not read: credentials and tokens belong in the body.
func (o *oauthServer) readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, &oauthFailure{code: refusal.InvalidRequest, desc: "use POST", status: http.StatusMethodNotAllowed}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, badRequest(refusal.InvalidRequest, "the body must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, o.maxBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, badRequest(refusal.InvalidRequest, fmt.Sprintf("the body is larger than %d bytes", o.maxBytes))
		}
		return nil, badRequest(refusal.InvalidRequest, "the body could not be read")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, badRequest(refusal.InvalidRequest, "the body is not valid form encoding")
	}
	for k, vs := range form {
		if len(vs) > 1 {
			return nil, badRequest(refusal.InvalidRequest, fmt.Sprintf("parameter %q is repeated (RFC 6749 §3.1)", k))
		}
		if vs[0] == "" {
			delete(form, k)
		}
	}
	return form, nil
}

// client authenticates the caller of an endpoint (AuthenticateClient) and
// returns the context its decisions run in (the client as caller and as
// the actor of the events) and the public base URL of r: without one no
// endpoint can check an assertion's aud or a proof's htu (404).
func (o *oauthServer) client(r *http.Request, path string, form url.Values) (context.Context, auth.Identity, string, error) {
	base, ok := o.public.Base(r)
	if !ok {
		return nil, auth.Identity{}, "", &oauthFailure{code: refusal.InvalidRequest, desc: ErrNoPublicURL.Error(), status: http.StatusNotFound}
	}
	audiences := []string{base, base + auth.PathOAuthToken}
	id, err := o.guard.AuthenticateClient(r.Context(), r, path, form, audiences)
	if err != nil {
		return nil, id, base, err
	}
	return auth.ClientContext(r.Context(), id), id, base, nil
}

// token serves the token endpoint: grant_type=refresh_token (RFC 6749
// §6), with DPoP (RFC 9449 §5) and scope narrowing. It is RefreshTokens:
// the same proof check and issuer.Refresh.
func (o *oauthServer) token(w http.ResponseWriter, r *http.Request) {
	const path = auth.PathOAuthToken
	start := time.Now()
	form, err := o.readForm(w, r)
	if err == nil {
		switch gt := form.Get("grant_type"); {
		case gt == "":
			err = badRequest(refusal.InvalidRequest, "grant_type is required")
		case gt != grantRefreshToken:
			err = badRequest(unsupportedGrantType, "only grant_type=refresh_token is supported")
		}
	}
	var ctx context.Context
	var id auth.Identity
	var base string
	if err == nil {
		ctx, id, base, err = o.client(r, path, form)
	}
	clientID := form.Get("client_id")
	if err == nil {
		if id.Kind == auth.KindClient || id.Kind == auth.KindNone {
			clientID = id.Name
		}
		switch {
		case clientID == "":
			err = fmt.Errorf("%w: client_id is required (RFC 6749 §3.2.1)", auth.ErrNoCredential)
		case !id.MayRefreshFor(clientID):
			err = badRequest(refusal.UnauthorizedClient, "this caller may not refresh tokens of this client_id")
		case form.Get("refresh_token") == "":
			err = badRequest(refusal.InvalidRequest, "refresh_token is required")
		case len(r.Header.Values("DPoP")) > 1:
			err = badRequest(dpop.CodeInvalidProof, "more than one DPoP header (RFC 9449 §4.3)")
		}
	}
	var t issuer.Tokens
	if err == nil {
		proof := r.Header.Get("DPoP")
		method, uri := "", ""
		endpoint := base + path // the htu of a proof made for this request
		if proof != "" {
			method, uri = http.MethodPost, endpoint
		}
		t, err = o.svc.refresh(ctx, proof, method, uri, normalizeAll([]string{endpoint}),
			issuer.RefreshRequest{RefreshToken: form.Get("refresh_token"), ClientID: clientID, Scopes: strings.Fields(form.Get("scope"))})
	}
	if err != nil {
		o.fail(w, r, path, start, err)
		return
	}
	resp := o.svc.response(t)
	o.setNonce(w)
	writeJSON(w, http.StatusOK, noStore, struct {
		AccessToken  string `json:"access_token"`
		TokenType    string `json:"token_type"`
		ExpiresIn    int64  `json:"expires_in"`
		RefreshToken string `json:"refresh_token"`
		Scope        string `json:"scope,omitempty"`
	}{resp.GetAccessToken(), resp.GetTokenType(), resp.GetExpiresIn(), resp.GetRefreshToken(), strings.Join(resp.GetScopes(), " ")})
	o.svc.metrics.oauthRequest(path, "", start)
}

// setNonce hands out a fresh DPoP nonce when nonces are on (RFC 9449 §8).
func (o *oauthServer) setNonce(w http.ResponseWriter) {
	if n := o.svc.dpop.Nonce(); n != "" {
		w.Header().Set(HeaderDPoPNonce, n)
	}
}

// fail answers a refused request in the form of RFC 6749 §5.2 and counts
// it. A domain error is mapped by the one table (Refusals); a server
// error is logged with the correlation ID.
func (o *oauthServer) fail(w http.ResponseWriter, r *http.Request, path string, start time.Time, err error) {
	f, ok := err.(*oauthFailure)
	if !ok {
		rule := Refusals().Rule(err)
		if rule.Log {
			o.svc.log.ErrorContext(r.Context(), "request failed", "procedure", path, "correlation_id", eventlog.CorrelationID(r.Context()), "error", err)
		}
		f = &oauthFailure{code: rule.OAuth, desc: rule.Text(err), status: oauthStatus(rule)}
		if rule.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(rule.RetryAfter/time.Second)))
		}
	}
	switch {
	case f.code == refusal.InvalidClient && strings.HasPrefix(strings.ToLower(r.Header.Get("Authorization")), "basic "):
		// RFC 6749 §5.2: the scheme the client tried.
		w.Header().Set("WWW-Authenticate", `Basic realm="tokend"`)
	case f.code == refusal.InvalidClient:
		w.Header().Set("WWW-Authenticate", `Bearer realm="tokend"`)
	case f.code == dpop.CodeUseNonce || f.code == dpop.CodeInvalidProof:
		o.setNonce(w)
	}
	writeJSON(w, f.status, noStore, struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{f.code, f.desc})
	o.svc.metrics.oauthRequest(path, f.code, start)
}

// oauthStatus is the HTTP status of a refusal of the table (RFC 6749
// §5.2: 400 unless the client failed to authenticate).
func oauthStatus(r refusal.Rule) int {
	switch {
	case r.OAuth == refusal.InvalidClient:
		return http.StatusUnauthorized
	case r.Code == connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case r.Code == connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case r.OAuth == refusal.ServerError:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

// noStore is the Cache-Control of token answers and errors (RFC 6749
// §5.1).
const noStore = "no-store"

// writeJSON writes an answer of an OAuth endpoint.
func writeJSON(w http.ResponseWriter, status int, cacheControl string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"server_error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", cacheControl)
	if cacheControl == noStore {
		w.Header().Set("Pragma", "no-cache")
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
