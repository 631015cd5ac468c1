package rpc

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/issuer"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/refusal"
)

// HeaderDPoPNonce carries a fresh DPoP nonce (RFC 9449 §8.1).
const HeaderDPoPNonce = "DPoP-Nonce"

// verifyTokenRequestProof checks the DPoP part of a token request
// (dpop.VerifyTokenRequest) to one of endpoints and counts the outcome; it
// returns the key thumbprint the tokens are bound to ("" for Bearer).
func (s *service) verifyTokenRequestProof(ctx context.Context, proof, method, uri, dpopJKT string, endpoints []string) (string, error) {
	jkt, err := s.dpop.VerifyTokenRequest(ctx, dpop.TokenRequest{Proof: proof, Method: method, URI: uri, BoundJKT: dpopJKT}, endpoints)
	if errors.Is(err, dpop.ErrRequestShape) {
		return "", invalidRequest(err.Error())
	}
	if proof != "" || dpopJKT != "" {
		s.metrics.dpopValidated(err)
	}
	return jkt, err
}

// refresh is RefreshTokens for both wire formats (Connect and the token
// endpoint): the request's DPoP fields are checked for shape at once, its
// proof (whose jti claim is an append) only once the issuer knows the
// refresh token (issuer.RefreshRequest.Proof), so a made-up token costs
// reads, never a write.
func (s *service) refresh(ctx context.Context, proof, method, uri string, endpoints []string, req issuer.RefreshRequest) (issuer.Tokens, error) {
	if proof == "" {
		if _, err := s.verifyTokenRequestProof(ctx, "", method, uri, "", endpoints); err != nil {
			return issuer.Tokens{}, err
		}
	} else {
		req.Proof = func(ctx context.Context) (string, error) {
			return s.verifyTokenRequestProof(ctx, proof, method, uri, "", endpoints)
		}
	}
	return s.issuer.Refresh(ctx, req)
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
		if issuer.AccessTokenRevoked(at, s.revocations) {
			s.metrics.dpopValidated(errInvalidToken)
			return refuse(refusal.InvalidToken, "access token is revoked")
		}
		if id, _ := auth.FromContext(ctx); !issuer.AudienceAcceptable(at.Audience, m.GetAudience(), id.Audiences) {
			s.metrics.dpopValidated(errInvalidToken)
			return refuse(refusal.InvalidToken, "access token is not for this audience")
		}
		boundJKT = at.JKT
	}
	p, err := s.dpop.VerifyResourceRequest(ctx, dpop.ResourceRequest{Proof: m.GetProof(), Method: m.GetHttpMethod(), URI: m.GetHttpUri(),
		AccessToken: m.GetAccessToken(), BoundJKT: boundJKT})
	if errors.Is(err, dpop.ErrBoundWithoutProof) {
		s.metrics.dpopValidated(errInvalidToken)
		return refuse(refusal.InvalidToken, err.Error())
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
