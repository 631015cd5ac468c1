// Package rpc serves the token service: token.v1.TokenService over Connect,
// gRPC and gRPC-Web on one handler, gRPC health and reflection, and plain
// HTTP endpoints (/.well-known/jwks.json, /healthz, /readyz, /metrics), and
// the Shared Signals transmitter of package ssf when configured.
//
// The standard OAuth endpoints (oauth.go: RFC 8414 metadata, the
// refresh_token grant, RFC 7009 revocation, RFC 7662 introspection) are
// another wire format of the same calls, for off-the-shelf clients: they
// decode a form, authenticate the client (auth.Guard.AuthenticateClient),
// call what RefreshTokens, RevokeToken and IntrospectToken call, and map
// refusals with the same table into RFC 6749 §5.2 JSON. The absolute URLs
// they publish come from one PublicURL (PUBLIC_BASE_URL).
//
// Handlers are thin: they decode, call package issuer, and map errors to
// Connect codes in one function (errors.go) by one table (Refusals, built
// with package refusal): each domain sentinel, matched with errors.Is, has
// its Connect code, OAuth error code (RFC 6749 §5.2, RFC 9449 §12.2) and
// public text. The guard (package auth) contributes its rules to the same
// table, and ValidateDPoP answers a refused proof in its words. A refused
// request carries its OAuth error code at the start of its message and in
// an OAuthError detail; the message reveals nothing more than the code's
// meaning, the detail goes to the log with the correlation ID.
//
// The correlation ID (X-Correlation-ID read, generated if absent or
// malformed, echoed, stamped on every event) is set by the outermost
// middleware, for every request; the interceptors are tracing (when
// configured), metrics and the guard's.
package rpc
