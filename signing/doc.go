// Package signing signs and verifies JSON Web Signatures (RFC 7515) for
// access tokens, with the algorithms of RFC 7518 §3 (RS256, PS256, ES256,
// ES384) and RFC 8037 (EdDSA with Ed25519).
//
// A Signer holds one key and signs a JWS signing input. Backends implement
// it in sub-packages: local (keys in process, sealed in the event log), and
// later remote key stores (AWS KMS, PKCS#11, a crypto service) whose keys
// never leave them. Every backend passes the contract suite in
// signing/signingtest: sign, then verify with the published JWK, for each
// algorithm it supports.
//
// Key IDs are RFC 7638 JWK thumbprints of the public key, so a key ID is
// stable, derived from the key alone, and the same on every replica.
//
// The set of keys and their lifecycle (generated → published → activated →
// retired → destroyed) lives in the event log; package signing/keyring
// drives it.
//
// # Retries
//
// Retry is the one retry rule of the remote backends (AWS KMS, a crypto
// service). It is for idempotent calls only: opening a key (GetPublicKey)
// and creating a key by intent (the key is named or tagged with the
// keyring's intent ID, so a repeated creation finds the key an earlier
// attempt made, even one whose answer was lost). Each backend says which
// errors are transient: network errors, throttling and the service's
// 5xx/unavailable answers; a permanent error (no such key, invalid key,
// permission denied) is returned at once. Attempts are spaced by an
// exponential backoff with jitter (RetryDelay) and stop at the caller's
// deadline, or Backoff.Timeout (CRYPTO_TIMEOUT in tokend) when the caller
// has none. Sign is never retried: the circuit breaker and the fallback
// key own signing failures (signing/breaker), and a retried Sign would
// hold a token request beyond CRYPTO_TIMEOUT. The AWS SDK's own retries
// are off in tokend, so that this rule is the only one.
package signing
