package issuer

import (
	"github.com/auth-platform/tokenservice/issuer/family"

	"context"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/auth-platform/tokenservice/signing"
)

// Keys is what the issuer needs of the signing keys.
type Keys interface {
	// Active returns the signer of the active key (the fallback key's
	// while the primary backend is known to be down).
	Active(ctx context.Context) (signing.Signer, error)
	// Fallback returns the fallback key's signer, if there is one.
	Fallback() (signing.Signer, bool)
	// PublicKey returns a key of the JWKS by ID.
	PublicKey(kid string) (crypto.PublicKey, signing.Algorithm, bool)
}

// AccessClaims are the claims of an access token (RFC 9068 §2.2).
type AccessClaims struct {
	Issuer   string
	Subject  string
	Audience []string
	ClientID string
	IssuedAt time.Time
	Expiry   time.Time
	ID       string
	Scopes   []string
	FamilyID string // the sid claim
	JKT      string // cnf.jkt, when DPoP-bound
	Extra    *structpb.Struct
}

type cnf struct {
	JKT string `json:"jkt"`
}

// accessJSON is the JSON form; extra claims are merged in by hand so the
// common case needs no map.
type accessJSON struct {
	Iss      string   `json:"iss"`
	Sub      string   `json:"sub"`
	Aud      []string `json:"aud"`
	ClientID string   `json:"client_id"`
	Iat      int64    `json:"iat"`
	Exp      int64    `json:"exp"`
	Jti      string   `json:"jti"`
	Scope    string   `json:"scope,omitempty"`
	Sid      string   `json:"sid"`
	Cnf      *cnf     `json:"cnf,omitempty"`
}

func newJTI(rand io.Reader) (string, error) {
	var b [jtiBytes]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return "", fmt.Errorf("jti: %w", err)
	}
	return b64.EncodeToString(b[:]), nil
}

// signAccessToken returns the compact JWS of c signed by s, with header
// typ "at+jwt" and the key's kid (RFC 9068 §2.1). The call to s.Sign (a
// KMS or HSM round trip with remote backends) is traced with tracer.
func signAccessToken(ctx context.Context, tracer trace.Tracer, s signing.Signer, c AccessClaims) (string, error) {
	body := accessJSON{
		Iss: c.Issuer, Sub: c.Subject, Aud: c.Audience, ClientID: c.ClientID,
		Iat: c.IssuedAt.Unix(), Exp: c.Expiry.Unix(), Jti: c.ID, Scope: strings.Join(c.Scopes, " "), Sid: c.FamilyID,
	}
	if c.JKT != "" {
		body.Cnf = &cnf{JKT: c.JKT}
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	if len(c.Extra.GetFields()) > 0 {
		extra, err := c.Extra.MarshalJSON()
		if err != nil {
			return "", fmt.Errorf("extra claims: %w", err)
		}
		// Both are JSON objects with disjoint names (registered names are
		// refused in extra claims): join their members.
		if len(extra) > 2 {
			payload = append(append(payload[:len(payload)-1], ','), extra[1:]...)
		}
	}
	tokenType := TokenTypeBearer
	if c.JKT != "" {
		tokenType = TokenTypeDPoP
	}
	at, err := signJWS(ctx, tracer, s, "at+jwt", payload, "issuer.SignAccessToken", attribute.String("token.type", tokenType))
	if err != nil {
		return "", fmt.Errorf("sign access token with %s: %w", s.KeyID(), err)
	}
	if len(at) > maxAccessTokenLen {
		// The verifier refuses longer tokens: never hand one out.
		return "", invalidRequest("the access token would be %d bytes, over %d", len(at), maxAccessTokenLen)
	}
	return at, nil
}

// signJWS is signing.SignJWS traced as span, with attrs: the call to
// s.Sign is a KMS or HSM round trip with remote backends.
func signJWS(ctx context.Context, tracer trace.Tracer, s signing.Signer, typ string, payload []byte, span string, attrs ...attribute.KeyValue) (string, error) {
	sctx, sp := tracer.Start(ctx, span, trace.WithAttributes(append(attrs,
		attribute.String("signing.algorithm", string(s.Algorithm())),
		attribute.String("signing.key_id", s.KeyID()))...))
	defer sp.End()
	jws, err := signing.SignJWS(sctx, s, typ, payload)
	if err != nil {
		sp.SetAttributes(attribute.String("issuer.result", "error"))
		sp.SetStatus(codes.Error, "sign failed")
		return "", err
	}
	sp.SetAttributes(attribute.String("issuer.result", "ok"))
	return jws, nil
}

// SignJWT returns claims (marshalled to a JSON object) signed as a JWT of
// type typ by the active key, or by the fallback key while the remote
// backend is unavailable, as access tokens are; verifiers find either in
// the JWKS. It signs what the service asserts besides access tokens:
// introspection responses (RFC 9701) and security event tokens (RFC
// 8417).
func (i *Issuer) SignJWT(ctx context.Context, typ string, claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signer, err := i.keys.Active(ctx)
	if err != nil {
		return "", fmt.Errorf("signing key: %w", err)
	}
	span := "issuer.SignJWT"
	jws, err := signJWS(ctx, i.cfg.Tracer, signer, typ, payload, span, attribute.String("jwt.type", typ))
	if fb, ok := i.keys.Fallback(); ok && errors.Is(err, signing.ErrUnavailable) {
		i.cfg.Observer.FallbackSigned()
		jws, err = signJWS(ctx, i.cfg.Tracer, fb, typ, payload, span, attribute.String("jwt.type", typ))
	}
	if err != nil {
		return "", fmt.Errorf("sign %s: %w", typ, err)
	}
	return jws, nil
}

// ErrInvalidAccessToken is returned by VerifyAccessToken for a token that
// is malformed, not signed by a key of the JWKS, of another issuer, or not
// an RFC 9068 access token.
var ErrInvalidAccessToken = errors.New("invalid access token")

// maxAccessTokenLen bounds what VerifyAccessToken parses.
const maxAccessTokenLen = 16 << 10

// VerifiedAccessToken holds the claims the service relies on.
type VerifiedAccessToken struct {
	Subject  string
	ClientID string
	FamilyID string
	JKT      string
	IssuedAt time.Time
	Expiry   time.Time
	KeyID    string
	// ID, Issuer, Audience and Scope are the jti, iss, aud and scope
	// claims, for introspection.
	ID       string
	Issuer   string
	Audience []string
	Scope    string
}

// accessTokenClaims are the claims VerifyAccessToken reads.
type accessTokenClaims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id"`
	Sid      string `json:"sid"`
	Scope    string `json:"scope"`
	Cnf      *cnf   `json:"cnf"`
}

// accessParserOptions are the rules an access token's form and claims
// follow: the parser applies them to a token seen the first time, and
// the validator they make to a token found in the cache. Claims are
// validated (exp, iat, iss) only if checkExpiry is set.
func (i *Issuer) accessParserOptions(checkExpiry bool) []jwt.ParserOption {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"RS256", "PS256", "ES256", "ES384", "EdDSA"}),
		jwt.WithIssuer(i.cfg.Issuer),
		jwt.WithTimeFunc(i.cfg.Now),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(5 * time.Second), // replicas' clocks drift a little
		jwt.WithStrictDecoding(),
	}
	if !checkExpiry {
		opts = append(opts, jwt.WithoutClaimsValidation())
	}
	return opts
}

// VerifyAccessToken checks the signature of an access token against the
// keys of the JWKS, its typ and issuer. Expiry is checked only if
// checkExpiry is set (revocation accepts expired tokens, RFC 7009 §2.2).
// It does not check revocation (AccessTokenRevoked does).
//
// A token whose signature checked out is remembered in a bounded cache
// (Config.VerifiedTokens), so that a token presented again is not
// verified again: only whether its key is still in the JWKS and its
// claims against the clock are checked again.
func (i *Issuer) VerifyAccessToken(token string, checkExpiry bool) (VerifiedAccessToken, error) {
	if len(token) > maxAccessTokenLen {
		return VerifiedAccessToken{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidAccessToken, maxAccessTokenLen)
	}
	var digest [sha256.Size]byte
	if i.verified != nil {
		digest = sha256.Sum256([]byte(token))
		if e, ok := i.verified.get(digest); ok && i.keyUnchanged(e) {
			return i.verifiedAgain(e, checkExpiry)
		}
	}
	var claims accessTokenClaims
	var entry verifiedEntry
	_, err := jwt.NewParser(i.accessParserOptions(checkExpiry)...).ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, "at+jwt") {
			return nil, errors.New("typ is not at+jwt")
		}
		entry.kid, _ = t.Header["kid"].(string)
		pub, alg, ok := i.keys.PublicKey(entry.kid)
		if !ok || string(alg) != t.Method.Alg() {
			return nil, errors.New("unknown key")
		}
		entry.alg, entry.pub = alg, pub
		return pub, nil
	})
	if err != nil {
		return VerifiedAccessToken{}, fmt.Errorf("%w: %v", ErrInvalidAccessToken, err)
	}
	if !checkExpiry && claims.Issuer != i.cfg.Issuer {
		return VerifiedAccessToken{}, fmt.Errorf("%w: issuer", ErrInvalidAccessToken)
	}
	if i.verified != nil {
		entry.claims = claims
		i.verified.add(digest, &entry)
	}
	return verifiedAccessToken(&claims, entry.kid), nil
}

// keyUnchanged reports whether the key that verified the cached token e
// is still in the JWKS, under its key ID, with the same algorithm. If not
// (a destroyed key leaves the JWKS), the token is verified again from
// scratch, and refused if its key is gone.
func (i *Issuer) keyUnchanged(e *verifiedEntry) bool {
	pub, alg, ok := i.keys.PublicKey(e.kid)
	return ok && alg == e.alg && sameKey(pub, e.pub)
}

// verifiedAgain checks a token found in the cache, whose key is unchanged,
// as VerifyAccessToken checks one seen the first time but for its
// signature: its claims must pass the same validation now.
func (i *Issuer) verifiedAgain(e *verifiedEntry, checkExpiry bool) (VerifiedAccessToken, error) {
	if checkExpiry {
		if err := jwt.NewValidator(i.accessParserOptions(true)...).Validate(&e.claims); err != nil {
			return VerifiedAccessToken{}, fmt.Errorf("%w: %v", ErrInvalidAccessToken, err)
		}
	} else if e.claims.Issuer != i.cfg.Issuer {
		return VerifiedAccessToken{}, fmt.Errorf("%w: issuer", ErrInvalidAccessToken)
	}
	return verifiedAccessToken(&e.claims, e.kid), nil
}

// verifiedAccessToken is what the service relies on of claims, verified
// with key kid.
func verifiedAccessToken(claims *accessTokenClaims, kid string) VerifiedAccessToken {
	v := VerifiedAccessToken{
		Subject: claims.Subject, ClientID: claims.ClientID, FamilyID: claims.Sid, KeyID: kid,
		ID: claims.ID, Issuer: claims.Issuer, Audience: slices.Clone(claims.Audience), Scope: claims.Scope,
	}
	if claims.IssuedAt != nil {
		v.IssuedAt = claims.IssuedAt.Time
	}
	if claims.ExpiresAt != nil {
		v.Expiry = claims.ExpiresAt.Time
	}
	if claims.Cnf != nil {
		v.JKT = claims.Cnf.JKT
	}
	return v
}

// RevocationView is what a replica knows of revocations (its in-memory
// projection): whether a family is revoked, and the latest cut-off of a
// subject (the zero time for none).
type RevocationView interface {
	IsFamilyRevoked(fid string) bool
	CutoffOf(subject string) time.Time
}

// AccessTokenRevoked reports whether at is revoked as view knows it: the
// one predicate of the service and of resource servers (family.Revokes).
// A nil view knows no revocation.
func AccessTokenRevoked(at VerifiedAccessToken, view RevocationView) bool {
	if view == nil {
		return false
	}
	return family.Revokes(family.AccessClaims{Subject: at.Subject, FamilyID: at.FamilyID, IssuedAt: at.IssuedAt},
		view.IsFamilyRevoked(at.FamilyID), view.CutoffOf(at.Subject))
}

// IntrospectAccessToken returns the claims of an access token that is
// active (RFC 7662): its signature, issuer and lifetime check out, view
// knows no revocation of it, and its audience is acceptable to a resource
// server that expects audience and is restricted to allowed
// (AudienceAcceptable). ok is false for any other token.
func (i *Issuer) IntrospectAccessToken(token string, view RevocationView, audience string, allowed []string) (at VerifiedAccessToken, ok bool) {
	at, err := i.VerifyAccessToken(token, true)
	if err != nil || !AudienceAcceptable(at.Audience, audience, allowed) || AccessTokenRevoked(at, view) {
		return VerifiedAccessToken{}, false
	}
	return at, true
}
