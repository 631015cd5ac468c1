package dpop

import (
	"context"
	"errors"
	"slices"
)

// ErrRequestShape is returned for a request whose DPoP fields do not go
// together (a method and URI without a proof, or a proof without them): an
// invalid request, not an invalid proof.
var ErrRequestShape = errors.New("invalid_request")

// shapeError names which fields do not go together.
type shapeError struct{ msg string }

func (e *shapeError) Error() string { return e.msg }
func (e *shapeError) Unwrap() error { return ErrRequestShape }

// Detail names the fields at fault: safe to show to the client.
func (e *shapeError) Detail() string { return e.msg }

// TokenRequest is the DPoP part of a token request (RFC 9449 §5).
type TokenRequest struct {
	Proof, Method, URI string
	// BoundJKT is a key the tokens must be bound to, given in advance
	// (the dpop_jkt of §10); "" for none.
	BoundJKT string
}

// VerifyTokenRequest checks the DPoP part of a token request and returns
// the thumbprint of the key the tokens are bound to ("" for Bearer). A
// proof is optional unless BoundJKT is set; with one, the request must be a
// POST to one of endpoints (normalised URIs; any, when empty) and the proof
// must carry no ath (a proof made for a resource request is not replayed
// here), and its key must be BoundJKT when that is set. Errors:
// ErrRequestShape, the proof errors of Verify, ErrMissing,
// ErrNotTokenRequest, ErrKeyMismatch.
func (v *Verifier) VerifyTokenRequest(ctx context.Context, r TokenRequest, endpoints []string) (string, error) {
	if r.Proof == "" {
		if r.BoundJKT != "" {
			return "", ErrMissing
		}
		if r.Method != "" || r.URI != "" {
			return "", &shapeError{"http_method and http_uri go with dpop_proof"}
		}
		return "", nil
	}
	if r.Method == "" || r.URI == "" {
		return "", &shapeError{"dpop_proof needs http_method and http_uri"}
	}
	if r.Method != "POST" || !isEndpoint(r.URI, endpoints) {
		return "", ErrNotTokenRequest
	}
	p, err := v.Verify(ctx, r.Proof, Request{Method: r.Method, URI: r.URI})
	switch {
	case err != nil:
		return "", err
	case p.ATH != "":
		return "", ErrNotTokenRequest
	case r.BoundJKT != "" && p.JKT != r.BoundJKT:
		return "", ErrKeyMismatch
	}
	return p.JKT, nil
}

// isEndpoint reports whether uri is one of endpoints (any, when none).
func isEndpoint(uri string, endpoints []string) bool {
	if len(endpoints) == 0 {
		return true
	}
	n, err := NormalizeURI(uri)
	return err == nil && slices.Contains(endpoints, n)
}

// ResourceRequest is a request to a resource server with a DPoP proof
// (RFC 9449 §7).
type ResourceRequest struct {
	Proof, Method, URI string
	// AccessToken is the presented token, "" for none; BoundJKT its
	// cnf.jkt, "" for a Bearer token.
	AccessToken, BoundJKT string
}

// ErrBoundWithoutProof: a DPoP-bound access token presented without a
// proof (a downgrade, §7.2).
var ErrBoundWithoutProof = errors.New("DPoP-bound access token presented without a DPoP proof")

// errNoRequest: the request's method or URI is missing, so htm and htu
// cannot be checked (an ErrMissingClaim).
var errNoRequest = &proofError{msg: "http_method and http_uri are required", kind: ErrMissingClaim}

// VerifyResourceRequest checks a resource request's proof: the proof
// itself with its ath over the access token, and the token's binding
// (§7). It returns the verified proof. Errors: ErrBoundWithoutProof,
// ErrMissingClaim (no method or URI), the proof errors of Verify,
// ErrKeyMismatch.
func (v *Verifier) VerifyResourceRequest(ctx context.Context, r ResourceRequest) (Proof, error) {
	if r.BoundJKT != "" && r.Proof == "" {
		return Proof{}, ErrBoundWithoutProof
	}
	if r.Method == "" || r.URI == "" {
		return Proof{}, errNoRequest
	}
	p, err := v.Verify(ctx, r.Proof, Request{Method: r.Method, URI: r.URI, AccessToken: r.AccessToken})
	if err == nil && r.BoundJKT != "" && p.JKT != r.BoundJKT {
		err = ErrKeyMismatch
	}
	return p, err
}
