//go:build !(linux && cgo)

package interop

// signingOpenSSL: without cgo, Go's crypto signs.
const signingOpenSSL = "off"
