// Package refusal builds the errors a client of the token service, or of
// cryptod, sees when a call is refused, from one table per service:
// sentinel error → Connect code, OAuth error code (RFC 6749 §5.2, RFC 6750
// §3.1, RFC 9449 §12.2), public text.
//
// A refusal's message starts with its OAuth error code, followed by ": "
// and the public text; the same code and text are in a tokenv1.OAuthError
// detail. The public text is short and reveals nothing an attacker can
// use: the error itself, with its detail, stays on the server, wrapped by
// the Connect error (errors.Is still finds the sentinel) and logged by the
// caller with the correlation ID when the rule says so.
//
// Rules are matched with errors.Is, never by reading an error's text. A
// domain error whose text is safe to show (the field a request got wrong,
// the DPoP check that failed) offers it through a Detail method (Detailer);
// a rule without a public text of its own uses it.
//
// The codes of DPoP (invalid_dpop_proof, use_dpop_nonce) belong to package
// dpop, which resource servers embed; the other codes are here.
package refusal
