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
package signing
