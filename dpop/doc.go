// Package dpop verifies DPoP proofs (RFC 9449, OAuth 2.0 Demonstrating
// Proof of Possession) and issues DPoP nonces.
//
// Verifier.Verify performs every check of RFC 9449 §4.3, each failure with
// its own sentinel error (errors.go):
//
//  1. one proof, within MaxProofBytes, a well-formed compact JWS (§4.2);
//  2. header typ "dpop+jwt";
//  3. alg in the allow-list the caller passes (asymmetric only: ES256,
//     ES384, RS256, PS256, EdDSA; "none" and HMAC are never accepted);
//  4. header jwk a public key of that algorithm with no private members;
//  5. the signature verifies with that jwk;
//  6. htm equals the request method;
//  7. htu equals the request URI, both normalised per RFC 3986 §6.2.2-6.2.3
//     (scheme and host case, default port, dot segments, percent-encoding
//     case), query and fragment ignored;
//  8. a server nonce, when one is required or presented (§8, §9);
//  9. iat within [now - Skew, now + FutureSkew], the clock injected;
//  10. ath, when an access token accompanies the proof, is the base64url
//     SHA-256 of it;
//  11. jti is claimed in a ReplayStore, so a proof is accepted once: the
//     event-log store claims it on token.dpop.<jkt>.<hash of jti> with
//     compare-and-set expecting no message and a TTL longer than the iat
//     window, which makes a replay visible on every replica.
//
// The key binding (§6: the access token's cnf.jkt, §5: the refresh token's
// family) is checked by the caller against Proof.JKT, the RFC 7638
// thumbprint of the proof key.
//
// Nonces are stateless: the base64url of an HMAC-SHA256 over a time step,
// keyed with a secret every replica shares (derived from ENCRYPTION_KEY),
// valid for the current and the previous step. They are unpredictable, need
// no storage, and are accepted by every replica.
package dpop
