package auth

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Role is a set of procedures a caller may call (see the rules table).
type Role string

// The roles of the policy.
const (
	// RoleIssuer mints, refreshes and revokes tokens for families or
	// tokens (the login front end).
	RoleIssuer Role = "issuer"
	// RoleResourceServer validates DPoP proofs, introspects tokens and
	// watches revocations.
	RoleResourceServer Role = "resource-server"
	// RoleAdmin manages signing keys, lists families and revokes by
	// subject.
	RoleAdmin Role = "admin"
	// RoleReceiver manages its own Shared Signals streams and polls them
	// (an SSF receiver: a relying party outside the platform).
	RoleReceiver Role = "receiver"
)

// Roles returns every role, in a fixed order.
func Roles() []Role { return []Role{RoleIssuer, RoleResourceServer, RoleAdmin, RoleReceiver} }

func validRole(r Role) bool { return slices.Contains(Roles(), r) }

// Kind says how a caller authenticated.
type Kind string

// The kinds of identity.
const (
	// KindNone is a caller without credential, allowed only with
	// AUTH_MODE=none (Config.Disabled) or on public procedures.
	KindNone Kind = "none"
	// KindAPIKey is a caller that presented an API key as a bearer
	// credential.
	KindAPIKey Kind = "apikey"
	// KindMTLS is a caller identified by a verified client certificate.
	KindMTLS Kind = "mtls"
)

// Identity is an authenticated caller.
type Identity struct {
	// Kind is how the caller authenticated.
	Kind Kind
	// Name is the policy entry's name.
	Name string
	// Subject is what the credential proves: the certificate identity (a
	// URI SAN such as a SPIFFE ID, or else the subject CN) for mTLS, the
	// entry's name for an API key, "" for none.
	Subject string
	// Roles are the caller's roles.
	Roles []Role
	// ClientIDs are the OAuth clients the caller may mint tokens for;
	// empty means any.
	ClientIDs []string
	// RateLimit is the caller's own rate limit; nil means the policy's
	// default.
	RateLimit *RateLimit
	// ExtraClaims are the authorization claims the caller may set through
	// extra_claims (the policy entry's extra_claims); empty means none.
	ExtraClaims []string
	// Audiences are the token audiences a resource server may validate
	// and introspect tokens for; empty means any.
	Audiences []string
	// Method is how a client (KindClient) authenticated.
	Method ClientAuthMethod
	// Expires is when the credential stops working: the API key's expiry,
	// or the client certificate's NotAfter; zero means never.
	Expires time.Time
}

// Actor returns how the identity is recorded on the events it causes
// ("apikey:<name>", "mtls:<certificate identity>", "client:<client_id>"),
// or "" for none.
func (id Identity) Actor() string {
	switch id.Kind {
	case KindAPIKey, KindMTLS, KindClient:
		return string(id.Kind) + ":" + id.Subject
	}
	return ""
}

// HasRole reports whether the identity holds r.
func (id Identity) HasRole(r Role) bool { return slices.Contains(id.Roles, r) }

// MayUseClient reports whether the identity may act for clientID. An
// identity restricted to a list of client IDs may not act for an empty
// one.
func (id Identity) MayUseClient(clientID string) bool {
	if len(id.ClientIDs) == 0 {
		return true
	}
	return clientID != "" && slices.Contains(id.ClientIDs, clientID)
}

type identityKey struct{}

// NewContext returns a context that carries id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity the Guard put in ctx.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// AllowedClient returns nil if the caller of ctx may mint tokens for
// clientID, and otherwise a *connect.Error with CodePermissionDenied that
// wraps ErrClientNotAllowed (or, without identity in ctx, CodeUnauthenticated
// wrapping ErrNoCredential). The Guard already applies it to the client_id
// of GenerateTokens and RefreshTokens; handlers call it for any other
// client_id they act on.
func AllowedClient(ctx context.Context, clientID string) error {
	id, ok := FromContext(ctx)
	if !ok {
		return refusalOf(ErrNoCredential)
	}
	if !id.MayUseClient(clientID) {
		return refusalOf(ErrClientNotAllowed)
	}
	return nil
}

// CertificateIdentity returns the caller identity of a client certificate
// that the server verified: its URI SAN (a SPIFFE ID has exactly one), or
// else its subject CN. It is the one rule of certificate identity, used by
// tokend's Guard and by cryptod. It returns an error wrapping
// ErrUnknownCredential for a certificate with several URI SANs, with
// neither a URI SAN nor a CN, or whose CN contains ':': URI SANs and CNs
// share one identity table, so a CN that looks like a URI
// (CN=spiffe://…/admin) would pass for another workload's URI SAN.
func CertificateIdentity(cert *x509.Certificate) (string, error) {
	switch len(cert.URIs) {
	case 0:
		cn := cert.Subject.CommonName
		switch {
		case cn == "":
			return "", fmt.Errorf("%w: client certificate without URI SAN or CN", ErrUnknownCredential)
		case strings.Contains(cn, ":"):
			return "", fmt.Errorf("%w: client certificate CN %q looks like a URI; put the identity in a URI SAN", ErrUnknownCredential, cn)
		}
		return cn, nil
	case 1:
		return cert.URIs[0].String(), nil
	}
	return "", fmt.Errorf("%w: client certificate with %d URI SANs", ErrUnknownCredential, len(cert.URIs))
}
