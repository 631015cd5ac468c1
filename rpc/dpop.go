package rpc

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/family"
	"github.com/auth-platform/tokenservice/projections"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/refusal"
)

// HeaderDPoPNonce carries a fresh DPoP nonce (RFC 9449 §8.1).
const HeaderDPoPNonce = "DPoP-Nonce"

// verifyTokenRequestProof checks the DPoP proof of a token request, if
// any, and returns the key thumbprint the tokens are bound to ("" for
// Bearer). dpopJKT is GenerateTokens' optional pre-bound key (§10).
func (s *service) verifyTokenRequestProof(ctx context.Context, proof, method, uri, dpopJKT string) (string, error) {
	if proof == "" {
		if dpopJKT != "" {
			s.metrics.dpopValidated(dpop.ErrMissing)
			return "", dpop.ErrMissing
		}
		if method != "" || uri != "" {
			return "", invalidRequest("http_method and http_uri go with dpop_proof")
		}
		return "", nil
	}
	if method == "" || uri == "" {
		return "", invalidRequest("dpop_proof needs http_method and http_uri")
	}
	// A token request is a POST to a token endpoint, and its proof has no
	// ath: a proof made for a resource request cannot be replayed here.
	if method != "POST" || !s.tokenEndpoint(uri) {
		s.metrics.dpopValidated(dpop.ErrNotTokenRequest)
		return "", dpop.ErrNotTokenRequest
	}
	p, err := s.dpop.Verify(ctx, proof, dpop.Request{Method: method, URI: uri})
	if err == nil && p.ATH != "" {
		err = dpop.ErrNotTokenRequest
	}
	if err == nil && dpopJKT != "" && p.JKT != dpopJKT {
		err = dpop.ErrKeyMismatch
	}
	s.metrics.dpopValidated(err)
	if err != nil {
		return "", err
	}
	return p.JKT, nil
}

// tokenEndpoint reports whether uri is one of the configured token
// endpoints (any, when none is configured).
func (s *service) tokenEndpoint(uri string) bool {
	if len(s.tokenEndpoints) == 0 {
		return true
	}
	n, err := dpop.NormalizeURI(uri)
	if err != nil {
		return false
	}
	for _, e := range s.tokenEndpoints {
		if e == n {
			return true
		}
	}
	return false
}

func invalidRequest(desc string) error {
	return oauthError(connect.CodeInvalidArgument, refusal.InvalidRequest, desc)
}

// ValidateDPoP checks a proof for a resource server (RFC 9449 §7): the
// proof itself, its ath over the access token, and the token's binding. A
// refusal is an answer (valid false with an OAuth error code), not an RPC
// error; the response always carries a fresh nonce when nonces are on.
func (s *service) ValidateDPoP(ctx context.Context, req *connect.Request[tokenv1.ValidateDPoPRequest]) (*connect.Response[tokenv1.ValidateDPoPResponse], error) {
	m := req.Msg
	out := &tokenv1.ValidateDPoPResponse{Nonce: s.dpop.Nonce()}
	refuse := func(code, desc string) (*connect.Response[tokenv1.ValidateDPoPResponse], error) {
		out.Error, out.ErrorDescription = code, desc
		return connect.NewResponse(out), nil
	}
	var boundJKT string
	if m.GetAccessToken() != "" {
		at, err := s.issuer.VerifyAccessToken(m.GetAccessToken(), true)
		if err != nil {
			s.metrics.dpopValidated(errInvalidToken)
			return refuse(refusal.InvalidToken, "access token is invalid or expired")
		}
		if s.revoked(at) {
			s.metrics.dpopValidated(errInvalidToken)
			return refuse(refusal.InvalidToken, "access token is revoked")
		}
		if id, _ := auth.FromContext(ctx); !issuer.AudienceAcceptable(at.Audience, m.GetAudience(), id.Audiences) {
			s.metrics.dpopValidated(errInvalidToken)
			return refuse(refusal.InvalidToken, "access token is not for this audience")
		}
		boundJKT = at.JKT
		if boundJKT != "" && m.GetProof() == "" {
			// §7.2: a bound token without a proof is a downgrade.
			s.metrics.dpopValidated(errInvalidToken)
			return refuse(refusal.InvalidToken, "DPoP-bound access token presented without a DPoP proof")
		}
	}
	if m.GetHttpMethod() == "" || m.GetHttpUri() == "" {
		s.metrics.dpopValidated(dpop.ErrMissingClaim)
		return refuse(dpop.CodeInvalidProof, "http_method and http_uri are required")
	}
	p, err := s.dpop.Verify(ctx, m.GetProof(), dpop.Request{Method: m.GetHttpMethod(), URI: m.GetHttpUri(), AccessToken: m.GetAccessToken()})
	if err == nil && boundJKT != "" && p.JKT != boundJKT {
		err = dpop.ErrKeyMismatch
	}
	s.metrics.dpopValidated(err)
	if err != nil {
		// A refused proof is an answer, in the words of the one table.
		if dpop.Code(err) != "" {
			r := Refusals().Rule(err)
			return refuse(r.OAuth, r.Text(err))
		}
		return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
	}
	out.Valid, out.Jkt = true, p.JKT
	return connect.NewResponse(out), nil
}

// errInvalidToken labels refusals of the access token in metrics.
var errInvalidToken = errors.New("invalid_token")

// Revocations answers whether a family or a subject is revoked; the
// revocation projection implements it.
type Revocations interface {
	RevokedFamily(fid string) (projections.RevokedFamily, bool)
	SubjectCutoff(subject string) (projections.SubjectCutoff, bool)
}

// revoked reports whether the access token is revoked as this replica's
// projections know it (family.Revokes, the predicate resource servers use
// too).
func (s *service) revoked(at issuer.VerifiedAccessToken) bool {
	if s.revocations == nil {
		return false
	}
	_, familyRevoked := s.revocations.RevokedFamily(at.FamilyID)
	var cutoff time.Time
	if c, ok := s.revocations.SubjectCutoff(at.Subject); ok {
		cutoff = c.At
	}
	return family.Revokes(family.AccessClaims{Subject: at.Subject, FamilyID: at.FamilyID, IssuedAt: at.IssuedAt}, familyRevoked, cutoff)
}
