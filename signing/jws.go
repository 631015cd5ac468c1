package signing

import (
	"context"
	"encoding/base64"
	"encoding/json"
)

// SignJWS returns the compact JWS (RFC 7515 §7.1) of payload, a JSON
// object, signed by s: a header of s's alg and kid and of typ, the one
// way the service assembles what it signs (access tokens, introspection
// responses, security event tokens).
func SignJWS(ctx context.Context, s Signer, typ string, payload []byte) (string, error) {
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{string(s.Algorithm()), s.KeyID(), typ})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, enc.EncodedLen(len(header))+1+enc.EncodedLen(len(payload))+1+700)
	buf = enc.AppendEncode(buf, header)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	sig, err := s.Sign(ctx, buf)
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	return string(enc.AppendEncode(buf, sig)), nil
}
