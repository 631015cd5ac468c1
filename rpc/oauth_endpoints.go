package rpc

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/refusal"
	"github.com/auth-platform/tokenservice/signing"
)

// metadata serves the authorization server metadata (RFC 8414 §3): the
// absolute URLs come from PublicURL; without one (a request addressed to
// another name while PUBLIC_BASE_URL is unset) there is none to give.
func (o *oauthServer) metadata(w http.ResponseWriter, r *http.Request) {
	base, ok := o.public.Base(r)
	if !ok {
		writeJSON(w, http.StatusNotFound, noStore, map[string]string{"error": refusal.InvalidRequest, "error_description": ErrNoPublicURL.Error()})
		return
	}
	methods := auth.ClientAuthMethods()
	assertionAlgs := signing.Algorithms // what a client's JWKS may hold (signing.JWK.PublicKey)
	writeJSON(w, http.StatusOK, "public, max-age=300", struct {
		Issuer                        string                  `json:"issuer"`
		TokenEndpoint                 string                  `json:"token_endpoint"`
		RevocationEndpoint            string                  `json:"revocation_endpoint"`
		IntrospectionEndpoint         string                  `json:"introspection_endpoint"`
		JWKSURI                       string                  `json:"jwks_uri"`
		GrantTypes                    []string                `json:"grant_types_supported"`
		ResponseTypes                 []string                `json:"response_types_supported"`
		TokenAuthMethods              []auth.ClientAuthMethod `json:"token_endpoint_auth_methods_supported"`
		TokenAuthAlgs                 []signing.Algorithm     `json:"token_endpoint_auth_signing_alg_values_supported"`
		RevocationAuthMethods         []auth.ClientAuthMethod `json:"revocation_endpoint_auth_methods_supported"`
		RevocationAuthAlgs            []signing.Algorithm     `json:"revocation_endpoint_auth_signing_alg_values_supported"`
		IntrospectionAuthMethods      []auth.ClientAuthMethod `json:"introspection_endpoint_auth_methods_supported"`
		IntrospectionAuthAlgs         []signing.Algorithm     `json:"introspection_endpoint_auth_signing_alg_values_supported"`
		IntrospectionSigningAlgs      []string                `json:"introspection_signing_alg_values_supported"`
		DPoPAlgs                      []string                `json:"dpop_signing_alg_values_supported"`
		ServiceDocumentation          string                  `json:"service_documentation,omitempty"`
		TLSClientCertificateBoundAT   bool                    `json:"tls_client_certificate_bound_access_tokens"`
		AuthorizationResponseIssParam bool                    `json:"authorization_response_iss_parameter_supported"`
	}{
		Issuer: base, TokenEndpoint: base + auth.PathOAuthToken, RevocationEndpoint: base + auth.PathOAuthRevoke,
		IntrospectionEndpoint: base + auth.PathOAuthIntrospect, JWKSURI: base + auth.PathJWKS,
		GrantTypes: []string{grantRefreshToken}, ResponseTypes: []string{},
		TokenAuthMethods: methods, TokenAuthAlgs: assertionAlgs,
		RevocationAuthMethods: methods, RevocationAuthAlgs: assertionAlgs,
		// A public client may not introspect (auth.IntrospectionScope).
		IntrospectionAuthMethods: slices.DeleteFunc(slices.Clone(methods), func(m auth.ClientAuthMethod) bool { return m == auth.ClientAuthNone }),
		IntrospectionAuthAlgs:    assertionAlgs,
		IntrospectionSigningAlgs: o.signingAlgorithms(),
		DPoPAlgs:                 o.svc.dpop.Algorithms(),
	})
}

// signingAlgorithms returns the algorithms of the keys in the JWKS, which
// sign signed introspection responses (the active key's, or the fallback
// key's during an outage).
func (o *oauthServer) signingAlgorithms() []string {
	var algs []string
	for _, k := range o.svc.keys.JWKS() {
		if !slices.Contains(algs, k.Alg) {
			algs = append(algs, k.Alg)
		}
	}
	return algs
}

// tokenRequest reads the request of an endpoint about one token (RFC 7009
// §2.1, RFC 7662 §2.1) and authenticates its caller; it answers a refusal
// itself and then returns ok false.
func (o *oauthServer) tokenRequest(w http.ResponseWriter, r *http.Request, path string, start time.Time) (context.Context, auth.Identity, url.Values, bool) {
	form, err := o.readForm(w, r)
	if err == nil && form.Get("token") == "" {
		err = badRequest(refusal.InvalidRequest, "token is required")
	}
	var ctx context.Context
	var id auth.Identity
	if err == nil {
		ctx, id, _, err = o.client(r, path, form)
	}
	if err != nil {
		o.fail(w, r, path, start, err)
		return nil, id, nil, false
	}
	return ctx, id, form, true
}

// revoke serves token revocation (RFC 7009): RevokeToken of a refresh or
// access token, within the clients the caller may revoke for. An unknown,
// malformed or foreign token revokes nothing and is answered 200 (§2.2),
// so a client learns nothing about tokens it does not hold.
func (o *oauthServer) revoke(w http.ResponseWriter, r *http.Request) {
	const path = auth.PathOAuthRevoke
	start := time.Now()
	ctx, id, form, ok := o.tokenRequest(w, r, path, start)
	if !ok {
		return
	}
	scope, may := id.RevocationScope()
	if !may {
		o.fail(w, r, path, start, badRequest(refusal.UnauthorizedClient, "this caller may not revoke tokens"))
		return
	}
	req := issuer.RevokeRequest{Target: issuer.TargetRefreshToken, Value: form.Get("token"), ClientScope: scope}
	// The shape decides, not token_type_hint (§2.1: a hint the server may
	// ignore): a JWT has two dots, a refresh token one.
	if strings.Count(req.Value, ".") == 2 {
		req.Target = issuer.TargetAccessToken
	}
	if _, err := o.svc.issuer.Revoke(ctx, req); err != nil {
		o.fail(w, r, path, start, err)
		return
	}
	w.Header().Set("Cache-Control", noStore)
	w.WriteHeader(http.StatusOK)
	o.svc.metrics.oauthRequest(path, "", start)
}

// introspect serves token introspection (RFC 7662): IntrospectToken, for
// a caller that may introspect (auth.IntrospectionScope), in the RFC's
// JSON.
func (o *oauthServer) introspect(w http.ResponseWriter, r *http.Request) {
	const path = auth.PathOAuthIntrospect
	start := time.Now()
	ctx, id, form, ok := o.tokenRequest(w, r, path, start)
	if !ok {
		return
	}
	clients, may := id.IntrospectionScope()
	if !may {
		o.fail(w, r, path, start, &oauthFailure{code: refusal.UnauthorizedClient, status: http.StatusForbidden,
			desc: "introspection needs a resource server, or a confidential client for its own tokens"})
		return
	}
	out, err := o.svc.introspect(ctx, form.Get("token"), "")
	if err != nil {
		o.fail(w, r, path, start, err)
		return
	}
	if clients != nil && !slices.Contains(clients, out.GetClientId()) {
		out = inactive()
	}
	body, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(out)
	contentType := "application/json"
	if err == nil && wantsJWT(r) {
		contentType = introspectionJWT
		body, err = o.signedIntrospection(ctx, r, id, body)
	}
	if err != nil {
		o.fail(w, r, path, start, err)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", noStore)
	_, _ = w.Write(body)
	o.svc.metrics.oauthRequest(path, "", start)
}

// introspectionJWT is the media type of a signed introspection response
// (RFC 9701 §4), asked for in Accept.
const introspectionJWT = "application/token-introspection+jwt"

func wantsJWT(r *http.Request) bool {
	for _, a := range r.Header.Values("Accept") {
		for _, part := range strings.Split(a, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), introspectionJWT) {
				return true
			}
		}
	}
	return false
}

// signedIntrospection wraps an RFC 7662 answer in a JWT signed by the
// service's key (RFC 9701 §5): iss is the issuer of the metadata, aud the
// caller (its client_id, or its policy name), so the resource server can
// prove what the authorization server said, and to whom.
func (o *oauthServer) signedIntrospection(ctx context.Context, r *http.Request, id auth.Identity, answer []byte) ([]byte, error) {
	base, ok := o.public.Base(r)
	if !ok {
		return nil, &oauthFailure{code: refusal.InvalidRequest, desc: ErrNoPublicURL.Error(), status: http.StatusNotFound}
	}
	if id.Name == "" {
		return nil, badRequest(refusal.InvalidRequest, "a signed introspection response names its recipient: send client_id")
	}
	jws, err := o.svc.issuer.SignJWT(ctx, "token-introspection+jwt", struct {
		Iss                string          `json:"iss"`
		Aud                string          `json:"aud"`
		Iat                int64           `json:"iat"`
		TokenIntrospection json.RawMessage `json:"token_introspection"`
	}{base, id.Name, o.svc.now().Unix(), answer})
	return []byte(jws), err
}
