// Package cryptosvc is the signing backend whose keys live in a
// platform's central crypto service: the client of crypto.v1
// (proto/crypto/v1), the contract the token service expects from such a
// service. cmd/cryptod implements it over PKCS#11.
//
// Signing. Sign hashes the JWS signing input here and sends only the
// digest; the service signs it with a key that never leaves its HSM.
// RS256 (RSASSA-PKCS1-v1_5), PS256 (RSASSA-PSS with a salt as long as the
// hash, RFC 7518 §3.5), ES256 and ES384, whose DER signatures are
// converted to the JOSE R||S of RFC 7518 §3.4.
//
// Keys. Backend is the keyring's backend in managed mode: it names each
// signing key after the keyring's creation intent ("signing-<intent>" in
// the configured namespace), and CreateKey is idempotent per name, so a
// creation retried after a crash finds the key the crashed attempt made
// and never leaves an orphan; the key's Ref is "namespace/name/version".
// Provisioned is the keyring's backend for a key the operator made
// (CRYPTO_SIGNING_KEY=name[/version], the specification's signer for an
// existing namespace, name and version): it calls GetPublicKey and Sign
// only. Following a name, it offers the primary version at every
// lifecycle step, so a version the operator adds with RotateKey is staged
// by the keyring within a tick (see package signing/keyring, "Provisioned
// keys"); a pinned version moves when the setting does. A signer always
// names its version: it never signs with "the primary" that could move
// under a kid.
//
// Envelope encryption. KeyWrapper wraps data keys with an AES key of the
// service (Encrypt and Decrypt), for signing/seal's envelope: local keys
// and grace-window successors are then sealed with a data key that only
// the service can unwrap.
//
// Resilience. GetPublicKey and CreateKey (idempotent per name) are
// retried by signing.Retry (Config.Backoff) when the service answers
// UNAVAILABLE or RESOURCE_EXHAUSTED or the connection was reset, within
// the caller's deadline; every other code is permanent. Sign, Encrypt and Decrypt are not retried:
// the keyring puts each signer behind signing/breaker, whose fallback key
// signs instead, and KeyWrapper runs its calls through a
// breaker.Breaker. The client speaks gRPC (over HTTP/2 and TLS), so any
// gRPC implementation of crypto.v1 serves it; it authenticates with a
// client certificate (mTLS) or an API key, or both.
package cryptosvc
