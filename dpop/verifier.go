package dpop

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/auth-platform/tokenservice/signing"
)

// ReplayStore claims proof IDs. Claim returns ErrReplay if jti was already
// claimed for key jkt within ttl, and another error if the claim could not
// be recorded (the proof is then refused: failing open would allow
// replays).
type ReplayStore interface {
	Claim(ctx context.Context, jkt, jti string, ttl time.Duration) error
}

// Config configures a Verifier.
type Config struct {
	// Algorithms is the allow-list of proof algorithms. Required; only
	// asymmetric algorithms of package signing can be listed.
	Algorithms []signing.Algorithm
	// Skew is how old a proof's iat may be. Default 60 s.
	Skew time.Duration
	// FutureSkew is how far in the future iat may be (clock drift).
	// Default 5 s.
	FutureSkew time.Duration
	// JTITTL is how long a jti stays claimed; at least Skew+FutureSkew.
	// Default 300 s.
	JTITTL time.Duration
	// MaxProofBytes bounds a proof. Default 8 KiB.
	MaxProofBytes int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Replay claims jti values. Required.
	Replay ReplayStore
	// Nonces, if set, checks nonces presented in proofs.
	Nonces *Nonces
	// NonceRequired refuses proofs without a valid nonce (with
	// ErrNonceMissing, answered by use_dpop_nonce). Needs Nonces.
	NonceRequired bool
}

// Request is the HTTP request a proof must match.
type Request struct {
	Method string
	URI    string
	// AccessToken, if set, must be bound by the proof's ath.
	AccessToken string
}

// Proof is a verified proof.
type Proof struct {
	// JKT is the RFC 7638 thumbprint of the proof key.
	JKT      string
	JTI      string
	IssuedAt time.Time
	Method   string
	URI      string
	// ATH is the proof's ath claim ("" if none).
	ATH string
}

// Verifier checks DPoP proofs. It is safe for concurrent use.
type Verifier struct {
	cfg     Config
	allowed map[string]signing.Algorithm
	methods []string
}

// NewVerifier returns a Verifier.
func NewVerifier(cfg Config) (*Verifier, error) {
	if len(cfg.Algorithms) == 0 {
		return nil, errors.New("dpop: Config.Algorithms is required")
	}
	if cfg.Replay == nil {
		return nil, errors.New("dpop: Config.Replay is required")
	}
	if cfg.NonceRequired && cfg.Nonces == nil {
		return nil, errors.New("dpop: NonceRequired needs Nonces")
	}
	if cfg.Skew <= 0 {
		cfg.Skew = 60 * time.Second
	}
	if cfg.FutureSkew <= 0 {
		cfg.FutureSkew = 5 * time.Second
	}
	if cfg.JTITTL <= 0 {
		cfg.JTITTL = 300 * time.Second
	}
	if cfg.JTITTL < cfg.Skew+cfg.FutureSkew {
		return nil, fmt.Errorf("dpop: JTITTL %s is shorter than the iat window %s: a replay could outlive its claim", cfg.JTITTL, cfg.Skew+cfg.FutureSkew)
	}
	if cfg.MaxProofBytes <= 0 {
		cfg.MaxProofBytes = 8 << 10
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{cfg: cfg, allowed: map[string]signing.Algorithm{}}
	for _, a := range cfg.Algorithms {
		if _, err := signing.Method(a); err != nil {
			return nil, err
		}
		v.allowed[string(a)] = a
		v.methods = append(v.methods, string(a))
	}
	return v, nil
}

// Algorithms returns the algorithms accepted in proofs, for the
// dpop_signing_alg_values_supported of metadata (RFC 9449 §5.1).
func (v *Verifier) Algorithms() []string { return slices.Clone(v.methods) }

// NonceRequired reports whether proofs must carry a nonce.
func (v *Verifier) NonceRequired() bool { return v.cfg.NonceRequired }

// Nonce returns a fresh nonce, or "" if nonces are off.
func (v *Verifier) Nonce() string {
	if v.cfg.Nonces == nil {
		return ""
	}
	return v.cfg.Nonces.Current()
}

// privateMembers are JWK members that only private keys have (RFC 7518
// §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

type claims struct {
	JTI   string      `json:"jti"`
	HTM   string      `json:"htm"`
	HTU   string      `json:"htu"`
	IAT   json.Number `json:"iat"`
	ATH   string      `json:"ath"`
	Nonce string      `json:"nonce"`
}

// GetExpirationTime and the rest make claims a jwt.Claims; the validation
// is done here, not by the parser.
func (claims) GetExpirationTime() (*jwt.NumericDate, error) { return nil, nil }
func (claims) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, nil }
func (claims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (claims) GetIssuer() (string, error)                   { return "", nil }
func (claims) GetSubject() (string, error)                  { return "", nil }
func (claims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

// Verify checks proof against req and claims its jti. The checks run in
// the order of RFC 9449 §4.3, cheapest first; the jti is claimed last, so
// only a proof that passed every other check burns it.
func (v *Verifier) Verify(ctx context.Context, proof string, req Request) (Proof, error) {
	if proof == "" {
		return Proof{}, ErrMissing
	}
	if len(proof) > v.cfg.MaxProofBytes {
		return Proof{}, ErrTooLarge
	}
	if strings.Count(proof, ".") != 2 {
		return Proof{}, ErrMalformed
	}
	var c claims
	var jkt string
	var typErr error
	parser := jwt.NewParser(jwt.WithValidMethods(v.methods), jwt.WithoutClaimsValidation(), jwt.WithJSONNumber(), jwt.WithStrictDecoding())
	_, err := parser.ParseWithClaims(proof, &c, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); typ != "dpop+jwt" {
			typErr = ErrType
			return nil, ErrType
		}
		alg, ok := v.allowed[t.Method.Alg()]
		if !ok {
			typErr = ErrAlgorithm
			return nil, ErrAlgorithm
		}
		raw, ok := t.Header["jwk"].(map[string]any)
		if !ok {
			typErr = ErrJWK
			return nil, ErrJWK
		}
		for _, m := range privateMembers {
			if _, ok := raw[m]; ok {
				typErr = ErrPrivateKey
				return nil, ErrPrivateKey
			}
		}
		str := func(k string) string { s, _ := raw[k].(string); return s }
		j := signing.JWK{Kty: str("kty"), Crv: str("crv"), X: str("x"), Y: str("y"), N: str("n"), E: str("e"), Alg: string(alg)}
		pub, err := j.PublicKey()
		if err != nil {
			typErr = ErrJWK
			return nil, ErrJWK
		}
		jkt = j.Thumbprint()
		return pub, nil
	})
	switch {
	case typErr != nil:
		return Proof{}, typErr
	case err == nil:
	case strings.Contains(err.Error(), "signing method"):
		// golang-jwt refuses an alg outside the allow-list ("none",
		// HMAC, unknown) before calling the key function.
		return Proof{}, ErrAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return Proof{}, ErrSignature
	default:
		return Proof{}, ErrMalformed
	}
	if c.JTI == "" || c.HTM == "" || c.HTU == "" || c.IAT == "" || len(c.JTI) > 256 {
		return Proof{}, ErrMissingClaim
	}
	if c.HTM != req.Method {
		return Proof{}, ErrMethod
	}
	want, err := NormalizeURI(req.URI)
	if err != nil {
		return Proof{}, fmt.Errorf("%w: request URI: %v", ErrURI, err)
	}
	if got, err := NormalizeURI(c.HTU); err != nil || got != want {
		return Proof{}, ErrURI
	}
	if n := v.cfg.Nonces; n != nil {
		switch {
		case c.Nonce == "" && v.cfg.NonceRequired:
			return Proof{}, ErrNonceMissing
		case c.Nonce != "" && !n.Valid(c.Nonce):
			return Proof{}, ErrNonceStale
		}
	}
	iatSec, err := c.IAT.Int64()
	if err != nil {
		return Proof{}, ErrMissingClaim
	}
	iat := time.Unix(iatSec, 0)
	now := v.cfg.Now()
	if iat.Before(now.Add(-v.cfg.Skew)) {
		return Proof{}, ErrIssuedTooEarly
	}
	if iat.After(now.Add(v.cfg.FutureSkew)) {
		return Proof{}, ErrIssuedInFuture
	}
	if req.AccessToken != "" {
		sum := sha256.Sum256([]byte(req.AccessToken))
		ath := base64.RawURLEncoding.EncodeToString(sum[:])
		if subtle.ConstantTimeCompare([]byte(ath), []byte(c.ATH)) != 1 {
			return Proof{}, ErrAccessTokenHash
		}
	}
	if err := v.cfg.Replay.Claim(ctx, jkt, c.JTI, v.cfg.JTITTL); err != nil {
		return Proof{}, err
	}
	return Proof{JKT: jkt, JTI: c.JTI, IssuedAt: iat, Method: c.HTM, URI: want, ATH: c.ATH}, nil
}
