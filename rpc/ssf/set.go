package ssf

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/auth-platform/tokenservice/signing"
)

// SignerSource returns the signer of the service's active key.
type SignerSource interface {
	Active(ctx context.Context) (signing.Signer, error)
}

// jtiOf is the one rule of a SET's jti: derived from the stream and the
// log record (or, for a verification, the request's nonce), so that a SET
// made again after a crash has the same jti, and a receiver can drop what
// it already has (RFC 8417 §2.2). 128 bits of SHA-256, base64url: also a
// token of a NATS subject.
func jtiOf(streamID string, seq uint64, nonce string) string {
	h := sha256.New()
	h.Write([]byte("tokend-ssf-jti\x00"))
	h.Write([]byte(streamID))
	h.Write([]byte{0})
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	h.Write(b[:])
	h.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

// setClaims are the claims of a SET (RFC 8417 §2.2, SSF 1.0 §4).
type setClaims struct {
	Iss    string                    `json:"iss"`
	Jti    string                    `json:"jti"`
	Iat    int64                     `json:"iat"`
	Aud    Audience                  `json:"aud"`
	SubID  *Subject                  `json:"sub_id"`
	Events map[string]map[string]any `json:"events"`
	Txn    string                    `json:"txn,omitempty"`
}

// signSET returns the SET of sig for stream r, a JWS in compact form with
// typ secevent+jwt (RFC 8417 §2.3) signed by s.
func signSET(ctx context.Context, s signing.Signer, iss string, r *record, sig *signal, jti string, now time.Time) (string, error) {
	body := sig.Body
	if body == nil {
		body = map[string]any{}
	}
	claims := setClaims{Iss: iss, Jti: jti, Iat: now.Unix(), Aud: r.Aud, SubID: sig.Subject,
		Events: map[string]map[string]any{sig.Type: body}}
	if sig.Seq != 0 {
		claims.Txn = fmt.Sprintf("log-%d", sig.Seq) // events of one log record share it
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	set, err := signing.SignJWS(ctx, s, setType, payload)
	if err != nil {
		return "", fmt.Errorf("sign SET with %s: %w", s.KeyID(), err)
	}
	return set, nil
}

// setType is the typ of a SET (RFC 8417 §2.3).
const setType = "secevent+jwt"

// KeySet tells whether a key is in the published JWKS.
type KeySet interface {
	JWKS() []signing.JWK
}

// published reports whether key kid is in keys' JWKS.
func published(keys KeySet, kid string) bool {
	for _, k := range keys.JWKS() {
		if k.Kid == kid {
			return true
		}
	}
	return false
}

// resign is the one rule for a queued SET whose key left the JWKS (a
// compromised key destroyed, a retired one past its retention): before it
// is delivered it is signed again, same claims (same jti), by the active
// key, so the receiver can verify it. A SET whose key is published is
// returned as it is. The SET is the transmitter's own, read from its
// sealed queue.
func resign(ctx context.Context, keys KeySet, active SignerSource, set string) (string, error) {
	if keys == nil {
		return set, nil
	}
	hdr, rest, ok := strings.Cut(set, ".")
	payload, _, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		return "", fmt.Errorf("ssf: a queued SET is not a JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(hdr)
	if err != nil {
		return "", fmt.Errorf("ssf: a queued SET's header: %w", err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", fmt.Errorf("ssf: a queued SET's header: %w", err)
	}
	if published(keys, h.Kid) {
		return set, nil
	}
	s, err := active.Active(ctx)
	if err != nil {
		return "", fmt.Errorf("ssf: signing key: %w", err)
	}
	claims, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return "", fmt.Errorf("ssf: a queued SET's payload: %w", err)
	}
	set, err = signing.SignJWS(ctx, s, setType, claims)
	if err != nil {
		return "", fmt.Errorf("sign SET with %s: %w", s.KeyID(), err)
	}
	return set, nil
}
