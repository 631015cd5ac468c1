//go:build linux && cgo

package interop

// signingOpenSSL: with cgo on Linux, RSA tokens are signed by OpenSSL or
// tokend does not start.
const signingOpenSSL = "on"
