// Package auth decides who may call the token service: it authenticates
// callers by API key or client certificate, authorizes each call against
// one small table of roles, limits each caller's rate, and records the
// caller as the actor of the events the call appends. It also serves the
// port's TLS certificate, reloaded when its files change.
//
// # Credentials
//
// An API key is presented as "Authorization: Bearer tdk_..." (RFC 6750
// §2.1 syntax). Keys are 256 random bits (GenerateAPIKey); the policy file
// holds only their SHA-256, looked up by the first 8 bytes of the hash and
// compared in full in constant time. A fast hash suffices for keys of that
// entropy (see HashAPIKey).
//
// A client certificate identifies its holder when the server verified it
// against the client CAs (mTLS, ServerTLSConfig): the identity is its URI
// SAN, such as a SPIFFE ID (exactly one is expected), or else its subject
// CN. A certificate from another CA, or an expired one, fails the TLS
// handshake: such a caller never reaches the policy.
//
// An API key wins over a certificate when both are presented. A presented
// credential that fails is refused, never replaced by the other.
//
// # Policy
//
// The policy file (LoadPolicy, reloaded by Policy.Reload on SIGHUP or by
// Policy.Watch when its content changes) lists API keys and certificate
// identities, each with a name, roles, optional client_ids it may mint
// tokens for, optional extra_claims (authorization claims it may set),
// optional audiences (the only token audiences a resource server may
// validate or introspect, RFC 7662 §4), an optional expiry (keys) and
// an optional rate limit; see PolicyFile. It is YAML, because the module already depends on a YAML
// parser, because operators edit the file by hand and want comments, and
// because JSON is YAML: a generated JSON file loads too. Decoding is
// strict (unknown fields are errors) and bounded (1 MiB, 10,000 entries).
// A file that does not parse never replaces the policy in force.
//
// A policy file is whole only when its last line is EndMarker ("# end"),
// which appears nowhere else in it (CheckComplete); otherwise it is
// refused at start, on SIGHUP and by Watch alike. A file read while being
// written is a prefix of the intended one, and a prefix of YAML can parse
// to a weaker policy (an entry cut before client_ids or expires admits any
// client, forever): no proper prefix of a whole file ends with its one
// marker line, so a truncated file is never applied.
//
// A stream outlives the check made when it began, so the interceptor
// checks a streaming caller again each time the policy is replaced and
// when its credential (API key or client certificate) expires, and ends
// the stream with a refusal wrapping ErrCallerWithdrawn once the caller
// would no longer be admitted.
//
// The table of roles (rules.go) is the whole authorization policy:
//
//	issuer           GenerateTokens, RefreshTokens (client_id checked),
//	                 RevokeToken of a family or a token
//	resource-server  ValidateDPoP, IntrospectToken, WatchRevocations
//	admin            RotateSigningKey, ListSigningKeys, ListFamilies,
//	                 RevokeToken (by subject, and of a family or token)
//	public           GetJWKS, /.well-known/jwks.json, /healthz, /readyz,
//	                 gRPC health, /.well-known/oauth-authorization-server
//	endpoint         /oauth2/token, /oauth2/revoke, /oauth2/introspect:
//	                 they authenticate OAuth clients themselves
//	                 (AuthenticateClient, client.go) and accept the
//	                 callers above with their roles
//	admin (HTTP)     /metrics, /projections/digest
//	receiver, admin  the Shared Signals API (/ssf/...): a receiver sees
//	                 only its own streams, an admin every stream
//	public (HTTP)    /.well-known/ssf-configuration
//	issuer, resource-server, admin
//	                 gRPC reflection
//
// Anything else is refused (default deny). A caller with client_ids may
// call GenerateTokens and RefreshTokens only with one of them, never with
// an empty one; handlers check other client_ids with AllowedClient.
//
// # Refusals
//
// A refused call gets a short message that starts with an OAuth error code
// (RFC 6749 §5.2), which is also in a tokenv1.OAuthError detail:
// CodeUnauthenticated "invalid_client" for no credential, or an unknown or
// expired one (these two alike: the caller learns nothing about which keys
// exist),
// CodePermissionDenied "unauthorized_client" for a wrong role or client_id,
// CodeResourceExhausted "temporarily_unavailable" over the rate limit. The
// detail goes to the log (with the correlation ID) and the count to an
// Observer. These rules are Refusals, in the form of package refusal; the
// service's table (rpc.Refusals) includes them, so a refusal by the guard
// and one by a handler look alike.
//
// # Rate limits
//
// Each authenticated caller has its own token bucket
// (golang.org/x/time/rate), with the entry's limit or the policy's default
// (DefaultRateLimit), so a flood from one caller takes nothing from the
// others. Calls without credential (public paths only) are not limited
// here: they are answered from memory.
//
// # Transport
//
// ServerTLSConfig serves TLS 1.2+ with ALPN h2 and http/1.1, so gRPC,
// Connect and gRPC-Web share the port; CertReloader replaces the
// certificate when its files change, keeping the previous one if the new
// pair does not load. IsLoopback supports the rule that authentication may
// be disabled (Config.Disabled, AUTH_MODE=none) only on loopback: the name
// "localhost" counts only when it resolves to loopback addresses alone.
// With authentication disabled the middleware serves only requests whose
// Host header is a loopback name or address (LoopbackHost), against DNS
// rebinding.
package auth
