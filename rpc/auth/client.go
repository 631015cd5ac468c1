package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/signing"
)

// ClientAuthMethod is how an OAuth client authenticates at the token,
// revocation and introspection endpoints, named as in RFC 7591 §2
// (token_endpoint_auth_method) and RFC 8705 §2.1.
type ClientAuthMethod string

// The client authentication methods of the policy file.
const (
	// ClientAuthNone is a public client (RFC 6749 §2.1): it names itself
	// with client_id and proves nothing; its refresh tokens are bound to
	// it, and to a DPoP key when it has one.
	ClientAuthNone ClientAuthMethod = "none"
	// ClientAuthSecretBasic is a client secret in HTTP Basic (RFC 6749
	// §2.3.1). The policy holds its SHA-256.
	ClientAuthSecretBasic ClientAuthMethod = "client_secret_basic"
	// ClientAuthPrivateKeyJWT is a JWT assertion signed by a key of the
	// client's registered JWKS (RFC 7523 §2.2, OpenID Connect Core §9).
	ClientAuthPrivateKeyJWT ClientAuthMethod = "private_key_jwt"
	// ClientAuthTLS is a client certificate the server verified, whose
	// identity (CertificateIdentity) is the client's (RFC 8705 §2.1).
	ClientAuthTLS ClientAuthMethod = "tls_client_auth"
)

// ClientAuthMethods returns every method, in the order the metadata lists
// them.
func ClientAuthMethods() []ClientAuthMethod {
	return []ClientAuthMethod{ClientAuthNone, ClientAuthSecretBasic, ClientAuthPrivateKeyJWT, ClientAuthTLS}
}

// KindClient is an OAuth client authenticated at an OAuth endpoint
// (AuthenticateClient). Its actor is "client:<client_id>".
const KindClient Kind = "client"

// ClientEntry registers an OAuth client for the standard endpoints.
//
//	clients:
//	  - client_id: web
//	    auth: none                       # a public client (SPA, mobile app)
//	  - client_id: backend
//	    auth: client_secret_basic
//	    secret_sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
//	  - client_id: gateway
//	    auth: private_key_jwt
//	    jwks: {keys: [{kty: EC, crv: P-256, alg: ES256, kid: k1, x: ..., y: ...}]}
//	    roles: [resource-server]         # may introspect
//	    audiences: [orders]
//	  - client_id: mesh
//	    auth: tls_client_auth
//	    identity: spiffe://example.org/ns/app/sa/mesh
type ClientEntry struct {
	// ClientID is the client's client_id: 1 to 128 printable ASCII
	// characters, unique among clients.
	ClientID string `yaml:"client_id" json:"client_id"`
	// Auth is how it authenticates.
	Auth ClientAuthMethod `yaml:"auth" json:"auth"`
	// SecretSHA256 is the hex SHA-256 of its secret (client_secret_basic).
	// Secrets are 256 random bits (tokenctl client new), so a fast hash
	// suffices, as for API keys.
	SecretSHA256 string `yaml:"secret_sha256,omitempty" json:"secret_sha256,omitempty"`
	// JWKS holds the public keys of its assertions (private_key_jwt).
	JWKS *ClientJWKS `yaml:"jwks,omitempty" json:"jwks,omitempty"`
	// Identity is its certificate identity (tls_client_auth).
	Identity string `yaml:"identity,omitempty" json:"identity,omitempty"`
	// Roles, if set, let it do more than use its own tokens: a
	// resource-server client may introspect (RFC 7662 §2.1).
	Roles []Role `yaml:"roles,omitempty" json:"roles,omitempty"`
	// Audiences, if set, are the only token audiences it may introspect.
	Audiences []string `yaml:"audiences,omitempty" json:"audiences,omitempty"`
	// RateLimit, if set, replaces the default rate limit for this client.
	RateLimit *RateLimit `yaml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
}

// GenerateClientSecret returns a new client secret for clientID, to hand
// to the client once, and the client_secret_basic entry that admits it
// (256 random bits in base64url; the entry holds only its SHA-256). It
// returns an error if clientID is invalid or random fails.
func GenerateClientSecret(random io.Reader, clientID string) (secret string, entry ClientEntry, err error) {
	b := make([]byte, apiKeyBytes)
	if _, err := io.ReadFull(random, b); err != nil {
		return "", ClientEntry{}, fmt.Errorf("auth: client secret: %w", err)
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	entry = ClientEntry{ClientID: clientID, Auth: ClientAuthSecretBasic, SecretSHA256: HashAPIKey(secret)}
	if _, err := parseClient(entry); err != nil {
		return "", ClientEntry{}, fmt.Errorf("auth: client: %w", err)
	}
	return secret, entry, nil
}

// Line returns the entry as one line to add under clients: in the policy
// file ("- {...}", JSON being YAML).
func (e ClientEntry) Line() string {
	b, _ := json.Marshal(e) // cannot fail: strings, and JWKs of strings
	return "- " + string(b)
}

// ClientJWKS is a JWK set (RFC 7517 §5) of a client's public keys.
type ClientJWKS struct {
	Keys []signing.JWK `yaml:"keys" json:"keys"`
}

// client is a parsed ClientEntry.
type client struct {
	method ClientAuthMethod
	secret [32]byte
	keys   []clientKey
	id     Identity
}

const maxClientKeys = 16

func parseClient(e ClientEntry) (client, error) {
	if err := validIdentity(e.ClientID); err != nil || len(e.ClientID) > maxClientIDLen {
		return client{}, fmt.Errorf("client_id must be 1 to %d printable ASCII characters", maxClientIDLen)
	}
	c := client{method: e.Auth}
	has := func(secret, jwks, identity bool) error {
		if (e.SecretSHA256 != "") != secret || (e.JWKS != nil) != jwks || (e.Identity != "") != identity {
			return fmt.Errorf("auth %s takes %s", e.Auth, map[ClientAuthMethod]string{
				ClientAuthNone: "no secret_sha256, jwks or identity", ClientAuthSecretBasic: "secret_sha256 alone",
				ClientAuthPrivateKeyJWT: "jwks alone", ClientAuthTLS: "identity alone"}[e.Auth])
		}
		return nil
	}
	var err error
	switch e.Auth {
	case ClientAuthNone:
		err = has(false, false, false)
		if err == nil && len(e.Roles) > 0 {
			err = errors.New("a public client (auth none) proves nothing, so it can hold no roles")
		}
	case ClientAuthSecretBasic:
		if err = has(true, false, false); err == nil {
			raw, herr := hex.DecodeString(e.SecretSHA256)
			if herr != nil || len(raw) != sha256.Size {
				return client{}, errors.New("secret_sha256 must be 64 hex digits")
			}
			copy(c.secret[:], raw)
		}
	case ClientAuthPrivateKeyJWT:
		if err = has(false, true, false); err == nil {
			c.keys, err = parseClientKeys(e.JWKS.Keys)
		}
	case ClientAuthTLS:
		if err = has(false, false, true); err == nil {
			err = validIdentity(e.Identity)
		}
	default:
		return client{}, fmt.Errorf("unknown auth %q (want none, client_secret_basic, private_key_jwt or tls_client_auth)", e.Auth)
	}
	if err != nil {
		return client{}, err
	}
	c.id, err = entryIdentity(KindClient, e.ClientID, e.ClientID, e.Roles, []string{e.ClientID}, nil, e.Audiences, e.RateLimit)
	c.id.Method = e.Auth
	return c, err
}

// AuthenticateClient authenticates the OAuth client of a request to a
// standard endpoint (token, revocation, introspection), whose
// form-encoded body is form; audiences are the values a private_key_jwt
// assertion's aud may take, one of them alone (the issuer, or the token
// endpoint URL).
//
// A request uses at most one method (RFC 6749 §2.3): HTTP Basic
// (client_secret_basic), client_assertion (private_key_jwt), or neither.
// With neither, a verified client certificate whose identity is a
// tls_client_auth client's authenticates it, and otherwise client_id
// names a public client (auth none). A platform caller of the policy (a
// bearer API key, a certificate of its mtls entries) is returned as
// itself, as the guard knows it. A form client_id must name the
// authenticated client. With authentication disabled (AUTH_MODE=none, or
// a nil Guard), the client is whatever the request names, proving
// nothing, as every call is then allowed.
//
// The result is rate-limited per client (a public client without a
// rate_limit of its own, per client and peer address). Errors wrap the guard's
// sentinels (ErrNoCredential, ErrUnknownCredential, ErrExpiredCredential,
// ErrRateLimited) or ErrClientRequest, and are counted and logged under
// path.
func (g *Guard) AuthenticateClient(ctx context.Context, r *http.Request, path string, form url.Values, audiences []string) (Identity, error) {
	basicID, basicSecret, basic, err := clientBasic(r.Header)
	if err != nil {
		return Identity{}, g.refuseClient(ctx, r, path, ReasonUnauthenticated, err, Identity{})
	}
	formID, assertion := form.Get("client_id"), form.Get("client_assertion")
	if n := count(basic, assertion != "", form.Has("client_secret"), hasBearer(r.Header)); n > 1 {
		return Identity{}, g.refuseClient(ctx, r, path, ReasonUnauthenticated,
			fmt.Errorf("%w: more than one client authentication method (RFC 6749 §2.3)", ErrClientRequest), Identity{})
	}
	if g == nil || g.disabled {
		return unauthenticatedClient(formID, basicID, assertion)
	}
	var id Identity
	switch {
	case form.Has("client_secret"):
		err = fmt.Errorf("%w: client_secret_post is not supported; send the secret with HTTP Basic", ErrUnknownCredential)
	case basic:
		id, err = g.clientBySecret(basicID, basicSecret)
	case assertion != "":
		id, err = g.clientByAssertion(ctx, form, assertion, audiences)
	case hasBearer(r.Header):
		id, err = g.authenticate(ctx, r.Header)
	default:
		id, err = g.clientByCertificateOrName(ctx, formID)
	}
	if err == nil && id.Kind == KindClient && formID != "" && formID != id.Name {
		err = fmt.Errorf("%w: client_id %q is not the authenticated client", ErrUnknownCredential, formID)
	}
	if err != nil {
		return id, g.refuseClient(ctx, r, path, ReasonUnauthenticated, err, id)
	}
	// A public client proves nothing, so one bucket for it would let
	// anyone spend it for every user of the app: without a rate_limit of
	// its own it has a bucket per client address.
	key := id.Actor()
	if id.Kind == KindClient && id.Method == ClientAuthNone && id.RateLimit == nil {
		key += "@" + remoteHost(r.RemoteAddr)
	}
	if !g.limiters.allow(key, g.limitOf(id), g.now()) {
		return id, g.refuseClient(ctx, r, path, ReasonRateLimited, ErrRateLimited, id)
	}
	return id, nil
}

// ErrClientRequest means a request whose client authentication is
// malformed rather than wrong: several methods, a bad Basic header.
var ErrClientRequest = errors.New("auth: malformed client authentication")

// ClientContext returns ctx with the client as the caller and as the
// actor of the events the call appends.
func ClientContext(ctx context.Context, id Identity) context.Context {
	return eventlog.WithActor(NewContext(ctx, id), id.Actor())
}

func (g *Guard) refuseClient(ctx context.Context, r *http.Request, path string, reason Reason, err error, id Identity) error {
	if g == nil {
		return err
	}
	_ = g.refuse(ctx, path, reason, err, id, r.RemoteAddr)
	return err
}

func unauthenticatedClient(formID, basicID, assertion string) (Identity, error) {
	name := formID
	if name == "" {
		name = basicID
	}
	if name == "" && assertion != "" {
		name = assertionSubject(assertion)
	}
	if basicID != "" && basicID != name {
		return Identity{}, fmt.Errorf("%w: client_id differs from the Basic user", ErrClientRequest)
	}
	if name == "" {
		return Identity{Kind: KindNone}, nil // a caller that names no client: any
	}
	return Identity{Kind: KindNone, Name: name, ClientIDs: []string{name}}, nil
}

func (g *Guard) clientBySecret(clientID, secret string) (Identity, error) {
	c, ok := g.policy.current().clients[clientID]
	if !ok || c.method != ClientAuthSecretBasic {
		return Identity{}, fmt.Errorf("%w: no client %q with client_secret_basic", ErrUnknownCredential, clientID)
	}
	sum := sha256.Sum256([]byte(secret))
	if !constantTimeEqual(sum[:], c.secret[:]) {
		return c.id, fmt.Errorf("%w: wrong secret for client %q", ErrUnknownCredential, clientID)
	}
	return c.id, nil
}

func (g *Guard) clientByCertificateOrName(ctx context.Context, formID string) (Identity, error) {
	pol := g.policy.current()
	if pc, ok := ctx.Value(peerKey{}).(peerCertificate); ok && pc.err == nil {
		if c, ok := pol.clientsByIdentity[pc.identity]; ok && (formID == "" || formID == c.id.Name) {
			if !g.now().Before(pc.notAfter) {
				return c.id, fmt.Errorf("%w: client certificate expired", ErrExpiredCredential)
			}
			return c.id, nil
		}
		if _, ok := pol.mtls[pc.identity]; ok {
			return g.authenticate(ctx, http.Header{})
		}
	}
	if formID == "" {
		return Identity{}, fmt.Errorf("%w: no client authentication and no client_id", ErrNoCredential)
	}
	c, ok := pol.clients[formID]
	if !ok {
		return Identity{}, fmt.Errorf("%w: no client %q", ErrUnknownCredential, formID)
	}
	if c.method != ClientAuthNone {
		return Identity{}, fmt.Errorf("%w: client %q must authenticate with %s", ErrNoCredential, formID, c.method)
	}
	return c.id, nil
}

// clientBasic returns the credentials of an HTTP Basic Authorization
// header, whose user and password are form-encoded (RFC 6749 §2.3.1).
func clientBasic(h http.Header) (id, secret string, ok bool, err error) {
	vs := h.Values("Authorization")
	if len(vs) == 0 || !strings.HasPrefix(strings.ToLower(vs[0]), "basic ") {
		return "", "", false, nil
	}
	if len(vs) > 1 {
		return "", "", false, fmt.Errorf("%w: several Authorization headers", ErrClientRequest)
	}
	r := http.Request{Header: http.Header{"Authorization": vs}}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", "", false, fmt.Errorf("%w: malformed Basic credentials", ErrClientRequest)
	}
	if id, err = url.QueryUnescape(user); err == nil {
		secret, err = url.QueryUnescape(pass)
	}
	if err != nil || id == "" {
		return "", "", false, fmt.Errorf("%w: Basic credentials are not form-encoded (RFC 6749 §2.3.1)", ErrClientRequest)
	}
	return id, secret, true, nil
}

// remoteHost is the address of a request's peer without its port.
func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func hasBearer(h http.Header) bool {
	vs := h.Values("Authorization")
	return len(vs) > 0 && !strings.HasPrefix(strings.ToLower(vs[0]), "basic ")
}

func count(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// IntrospectionScope returns whose tokens the caller may introspect (RFC
// 7662 §2.1, §4) and whether it may at all: a resource server, any
// client's (its audiences still apply); a confidential client, its own
// (it learns nothing it does not hold); anyone, with authentication
// disabled. A public client proves nothing, so it may not: an endpoint
// that answered anyone would be an oracle for stolen tokens.
func (id Identity) IntrospectionScope() (clients []string, ok bool) {
	switch {
	case id.Kind == KindNone, id.HasRole(RoleResourceServer):
		return nil, true
	case id.Kind == KindClient && id.Method != ClientAuthNone:
		return id.ClientIDs, true
	}
	return nil, false
}

// RevocationScope returns the clients whose tokens the caller may revoke
// at the revocation endpoint (RFC 7009 §2.1: a client, only its own; a
// platform caller, its client_ids, nil meaning any) and whether it may
// revoke at all.
func (id Identity) RevocationScope() (clients []string, ok bool) {
	switch {
	case id.Kind == KindClient, id.Kind == KindNone:
		return id.ClientIDs, true
	case id.HasRole(RoleIssuer), id.HasRole(RoleAdmin):
		return id.ClientIDs, true
	}
	return nil, false
}

// MayRefreshFor reports whether the caller may refresh tokens of clientID
// at the token endpoint: the client itself, or a platform caller with the
// issuer role that may act for it. No one may for no client.
func (id Identity) MayRefreshFor(clientID string) bool {
	if clientID == "" {
		return false
	}
	if id.Kind == KindClient || id.Kind == KindNone {
		return slices.Contains(id.ClientIDs, clientID)
	}
	return id.HasRole(RoleIssuer) && id.MayUseClient(clientID)
}
