package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/signing"
)

// AssertionType is the client_assertion_type of private_key_jwt (RFC 7523
// §2.2).
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Bounds of a client assertion: how far its clocks may be off, and how
// long it may live (its jti is claimed that long, so a longer lifetime
// would cost the log more than it buys the client).
const (
	assertionSkew        = 60 * time.Second
	assertionMaxLifetime = 10 * time.Minute
	maxAssertionBytes    = 8 << 10
)

type clientKey struct {
	jwk signing.JWK
	alg signing.Algorithm
	pub crypto.PublicKey
}

func parseClientKeys(jwks []signing.JWK) ([]clientKey, error) {
	if len(jwks) == 0 || len(jwks) > maxClientKeys {
		return nil, fmt.Errorf("jwks must hold 1 to %d keys", maxClientKeys)
	}
	keys := make([]clientKey, 0, len(jwks))
	for i, j := range jwks {
		alg, err := signing.ParseAlgorithm(j.Alg)
		if err != nil {
			return nil, fmt.Errorf("jwks.keys[%d]: alg: %v", i, err)
		}
		pub, err := j.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("jwks.keys[%d]: %v", i, err)
		}
		keys = append(keys, clientKey{jwk: j, alg: alg, pub: pub})
	}
	return keys, nil
}

// clientByAssertion authenticates a private_key_jwt client (RFC 7523 §3):
// the assertion's iss and sub are the client, aud names this server
// (one of audiences), exp is set and near, its jti is new, and it is
// signed by a key of the client's JWKS with that key's algorithm.
func (g *Guard) clientByAssertion(ctx context.Context, form url.Values, assertion string, audiences []string) (Identity, error) {
	if form.Get("client_assertion_type") != AssertionType {
		return Identity{}, fmt.Errorf("%w: client_assertion_type must be %s", ErrClientRequest, AssertionType)
	}
	if len(assertion) > maxAssertionBytes {
		return Identity{}, fmt.Errorf("%w: client_assertion larger than %d bytes", ErrUnknownCredential, maxAssertionBytes)
	}
	name := assertionSubject(assertion)
	c, ok := g.policy.current().clients[name]
	if !ok || c.method != ClientAuthPrivateKeyJWT {
		return Identity{}, fmt.Errorf("%w: no client %q with private_key_jwt", ErrUnknownCredential, name)
	}
	var used clientKey
	var claims jwt.RegisteredClaims
	now := g.now()
	p := jwt.NewParser(jwt.WithExpirationRequired(), jwt.WithLeeway(assertionSkew), jwt.WithIssuedAt(),
		jwt.WithIssuer(name), jwt.WithSubject(name), jwt.WithTimeFunc(func() time.Time { return now }))
	_, err := p.ParseWithClaims(assertion, &claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		for _, k := range c.keys {
			if (kid == "" || kid == k.jwk.Kid) && t.Method.Alg() == string(k.alg) {
				used = k
				return k.pub, nil
			}
		}
		return nil, errors.New("no key of the client's jwks has this kid and alg")
	})
	if err != nil {
		return c.id, fmt.Errorf("%w: client assertion of %q: %v", ErrUnknownCredential, name, err)
	}
	// One audience, this server (draft-ietf-oauth-rfc7523bis: a list
	// lets an assertion made for another server be replayed here).
	if len(claims.Audience) != 1 || !slices.Contains(audiences, claims.Audience[0]) {
		return c.id, fmt.Errorf("%w: client assertion aud %q is not exactly one of %q", ErrUnknownCredential, claims.Audience, audiences)
	}
	ttl := claims.ExpiresAt.Sub(now) + assertionSkew
	if ttl > assertionMaxLifetime+assertionSkew {
		return c.id, fmt.Errorf("%w: client assertion expires in %s, more than %s", ErrUnknownCredential, ttl-assertionSkew, assertionMaxLifetime)
	}
	if claims.ID == "" {
		return c.id, fmt.Errorf("%w: client assertion without jti", ErrUnknownCredential)
	}
	if g.replay != nil {
		if err := g.replay.Claim(ctx, used.jwk.Thumbprint(), claims.ID, ttl); err != nil {
			if errors.Is(err, dpop.ErrReplay) {
				return c.id, fmt.Errorf("%w: client assertion jti was used before", ErrUnknownCredential)
			}
			return c.id, err
		}
	}
	return c.id, nil
}

// assertionSubject returns the unverified sub of a JWT, which names the
// client whose keys verify it.
func assertionSubject(assertion string) string {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(assertion, &claims); err != nil {
		return ""
	}
	return claims.Subject
}
