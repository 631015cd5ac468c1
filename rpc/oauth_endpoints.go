package rpc

import (
	"net/http"
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
	assertionAlgs := []signing.Algorithm{signing.RS256, signing.PS256, signing.ES256, signing.ES384, signing.EdDSA}
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
		DPoPAlgs:                 o.svc.dpop.Algorithms(),
	})
}

// revoke serves token revocation (RFC 7009): RevokeToken of a refresh or
// access token, within the clients the caller may revoke for. An unknown,
// malformed or foreign token revokes nothing and is answered 200 (§2.2),
// so a client learns nothing about tokens it does not hold.
func (o *oauthServer) revoke(w http.ResponseWriter, r *http.Request) {
	const path = auth.PathOAuthRevoke
	start := time.Now()
	form, err := o.readForm(w, r)
	if err == nil && form.Get("token") == "" {
		err = badRequest(refusal.InvalidRequest, "token is required")
	}
	if err != nil {
		o.fail(w, r, path, start, err)
		return
	}
	ctx, id, err := o.client(r, path, form)
	if err != nil {
		o.fail(w, r, path, start, err)
		return
	}
	scope, ok := id.RevocationScope()
	if !ok {
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
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	o.svc.metrics.oauthRequest(path, "", start)
}

// introspect serves token introspection (RFC 7662): IntrospectToken, for
// a caller that may introspect (auth.IntrospectionScope), in the RFC's
// JSON.
func (o *oauthServer) introspect(w http.ResponseWriter, r *http.Request) {
	const path = auth.PathOAuthIntrospect
	start := time.Now()
	form, err := o.readForm(w, r)
	if err == nil && form.Get("token") == "" {
		err = badRequest(refusal.InvalidRequest, "token is required")
	}
	if err != nil {
		o.fail(w, r, path, start, err)
		return
	}
	ctx, id, err := o.client(r, path, form)
	if err != nil {
		o.fail(w, r, path, start, err)
		return
	}
	clients, ok := id.IntrospectionScope()
	if !ok {
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
	if err != nil {
		o.fail(w, r, path, start, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
	o.svc.metrics.oauthRequest(path, "", start)
}
