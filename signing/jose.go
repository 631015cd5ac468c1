package signing

import (
	"encoding/asn1"
	"math/big"
)

// DERToJOSE converts an ASN.1 DER Ecdsa-Sig-Value (RFC 3279 §2.2.3), the
// form remote backends (AWS KMS, PKCS#11 through crypto11) return, to the
// JOSE form of RFC 7518 §3.4: R and S, each big-endian and left-padded to
// size bytes (32 for ES256, 48 for ES384). It returns
// ErrMalformedSignature for anything else, including trailing bytes and
// integers that are not positive or do not fit in size bytes.
func DERToJOSE(der []byte, size int) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R == nil || sig.S == nil || sig.R.Sign() <= 0 || sig.S.Sign() <= 0 ||
		sig.R.BitLen() > size*8 || sig.S.BitLen() > size*8 {
		return nil, ErrMalformedSignature
	}
	out := make([]byte, 2*size)
	sig.R.FillBytes(out[:size])
	sig.S.FillBytes(out[size:])
	return out, nil
}
