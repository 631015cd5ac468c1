package auth

import (
	"sort"

	"connectrpc.com/grpchealth"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

// rule says who may call one procedure or HTTP path.
type rule struct {
	// public: anyone, without credential.
	public bool
	// roles: any one of them suffices.
	roles []Role
	// forRequest, if set, replaces roles with the roles the request
	// message needs (nil message for a stream: the strictest answer).
	forRequest func(msg any) []Role
	// clientBound: the request's client_id must be one the caller may
	// mint tokens for.
	clientBound bool
	// endpoint: anyone reaches it, and it authenticates its caller itself
	// (AuthenticateClient: OAuth clients as RFC 6749 §2.3 has them), so
	// its refusals are counted under its path.
	endpoint bool
}

// The paths of the JWKS and of the standard OAuth endpoints (package rpc
// serves them).
const (
	PathJWKS            = "/.well-known/jwks.json"
	PathOAuthMetadata   = "/.well-known/oauth-authorization-server"
	PathOAuthToken      = "/oauth2/token"
	PathOAuthRevoke     = "/oauth2/revoke"
	PathOAuthIntrospect = "/oauth2/introspect"
)

// procedureRules is the authorization policy of the RPCs. A procedure that
// is not in it is refused to every caller (default deny).
func procedureRules() map[string]rule {
	var (
		issuer         = []Role{RoleIssuer}
		resourceServer = []Role{RoleResourceServer}
		admin          = []Role{RoleAdmin}
	)
	return map[string]rule{
		// Verifiers fetch the keys without credential.
		tokenv1connect.TokenServiceGetJWKSProcedure: {public: true},

		tokenv1connect.TokenServiceGenerateTokensProcedure: {roles: issuer, clientBound: true},
		tokenv1connect.TokenServiceRefreshTokensProcedure:  {roles: issuer, clientBound: true},
		// One family or token: issuer; every family of a subject: admin.
		tokenv1connect.TokenServiceRevokeTokenProcedure: {roles: []Role{RoleIssuer, RoleAdmin}, forRequest: revokeRoles},

		tokenv1connect.TokenServiceValidateDPoPProcedure:     {roles: resourceServer},
		tokenv1connect.TokenServiceIntrospectTokenProcedure:  {roles: resourceServer},
		tokenv1connect.TokenServiceWatchRevocationsProcedure: {roles: resourceServer},

		tokenv1connect.TokenServiceRotateSigningKeyProcedure: {roles: admin},
		tokenv1connect.TokenServiceListSigningKeysProcedure:  {roles: admin},
		tokenv1connect.TokenServiceListFamiliesProcedure:     {roles: admin},
	}
}

// revokeRoles: revoking by subject ends every session of a user and is an
// admin's call; revoking one family or token is the issuer's (an admin may
// too: it is less than what admins can already do).
func revokeRoles(msg any) []Role {
	m, ok := msg.(*tokenv1.RevokeTokenRequest)
	if !ok {
		return []Role{RoleAdmin}
	}
	if _, bySubject := m.GetTarget().(*tokenv1.RevokeTokenRequest_Subject); bySubject {
		return []Role{RoleAdmin}
	}
	return []Role{RoleIssuer, RoleAdmin}
}

// httpRules is the policy of the other paths of the port: the JWKS, the
// Shared Signals metadata and health are public, metrics and the
// projections digest are for admins, the Shared Signals API for receivers
// and admins, reflection for the platform's roles (not receivers).
// Anything else is refused.
func httpRules(extraPublic []string) map[string]rule {
	health := "/" + grpchealth.HealthV1ServiceName + "/"
	receiver := []Role{RoleReceiver, RoleAdmin}
	platform := []Role{RoleIssuer, RoleResourceServer, RoleAdmin}
	r := map[string]rule{
		PathJWKS:         {public: true},
		"/healthz":       {public: true},
		"/readyz":        {public: true},
		health + "Check": {public: true},
		health + "Watch": {public: true},

		PathOAuthMetadata:   {public: true},
		PathOAuthToken:      {endpoint: true},
		PathOAuthRevoke:     {endpoint: true},
		PathOAuthIntrospect: {endpoint: true},

		"/metrics":            {roles: []Role{RoleAdmin}},
		"/projections/digest": {roles: []Role{RoleAdmin}},

		// Shared Signals (package ssf): the metadata is public; a
		// receiver manages and polls its own streams, an admin every
		// stream (the handlers apply ownership).
		"/.well-known/ssf-configuration": {public: true},
		"/ssf/streams":                   {roles: receiver},
		"/ssf/status":                    {roles: receiver},
		"/ssf/subjects/add":              {roles: receiver},
		"/ssf/subjects/remove":           {roles: receiver},
		"/ssf/verify":                    {roles: receiver},
		"/ssf/poll":                      {roles: receiver},

		// Reflection is for the platform's own callers, not for the
		// relying parties outside it that hold only the receiver role.
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      {roles: platform},
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {roles: platform},
	}
	for _, p := range extraPublic {
		r[p] = rule{public: true}
	}
	return r
}

// RefusalLabels returns every procedure label an Observer can receive: the
// RPCs and HTTP paths that are not public, sorted, then UnknownPath. A
// counter labelled with them can exist from start-up.
func RefusalLabels() []string {
	var out []string
	for _, rules := range []map[string]rule{procedureRules(), httpRules(nil)} {
		for p, r := range rules {
			if !r.public {
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	return append(out, UnknownPath)
}

// rolesFor returns the roles that allow a call of r with msg.
func (r rule) rolesFor(msg any) []Role {
	if r.forRequest != nil {
		return r.forRequest(msg)
	}
	return r.roles
}

// anyRoles returns every role that can allow some call of r (the HTTP
// layer's coarse check, before the message is read).
func (r rule) anyRoles() []Role { return r.roles }

func hasAny(id Identity, roles []Role) bool {
	for _, want := range roles {
		if id.HasRole(want) {
			return true
		}
	}
	return false
}

// clientIDer is a request that names the OAuth client it acts for.
type clientIDer interface{ GetClientId() string }
