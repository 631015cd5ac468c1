package rpc

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/issuer"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/signing"
)

// JWKSource returns the published keys.
type JWKSource interface {
	JWKS() []signing.JWK
}

// service implements tokenv1connect.TokenServiceHandler over an Issuer.
type service struct {
	issuer *issuer.Issuer
	keys   JWKSource
	log    *slog.Logger
	now    func() time.Time
}

var _ tokenv1connect.TokenServiceHandler = (*service)(nil)

// errDPoPNotYet refuses DPoP fields until DPoP is implemented: they are
// never silently ignored, since ignoring a proof would issue a Bearer token
// to a client that asked for a bound one.
func errDPoPNotYet() error {
	return oauthError(connect.CodeInvalidArgument, issuer.CodeInvalidRequest, "DPoP is not supported by this server yet; omit dpop_proof, http_method and http_uri")
}

func (s *service) GenerateTokens(ctx context.Context, req *connect.Request[tokenv1.GenerateTokensRequest]) (*connect.Response[tokenv1.TokenResponse], error) {
	m := req.Msg
	if m.GetDpopProof() != "" || m.GetHttpMethod() != "" || m.GetHttpUri() != "" {
		return nil, errDPoPNotYet()
	}
	t, err := s.issuer.Generate(ctx, issuer.GenerateRequest{
		Subject: m.GetSubject(), ClientID: m.GetClientId(), Audience: m.GetAudience(), Scopes: m.GetScopes(), Extra: m.GetExtraClaims(),
	})
	if err != nil {
		return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
	}
	return connect.NewResponse(s.response(t)), nil
}

func (s *service) RefreshTokens(ctx context.Context, req *connect.Request[tokenv1.RefreshTokensRequest]) (*connect.Response[tokenv1.TokenResponse], error) {
	m := req.Msg
	if m.GetDpopProof() != "" || m.GetHttpMethod() != "" || m.GetHttpUri() != "" {
		return nil, errDPoPNotYet()
	}
	t, err := s.issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: m.GetRefreshToken(), ClientID: m.GetClientId(), Scopes: m.GetScopes()})
	if err != nil {
		return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
	}
	return connect.NewResponse(s.response(t)), nil
}

func (s *service) response(t issuer.Tokens) *tokenv1.TokenResponse {
	now := s.now()
	return &tokenv1.TokenResponse{
		AccessToken:      t.AccessToken,
		TokenType:        t.TokenType,
		ExpiresIn:        max(0, int64(t.AccessExpiresAt.Sub(now).Round(time.Second)/time.Second)),
		RefreshToken:     t.RefreshToken,
		RefreshExpiresIn: max(0, int64(t.RefreshExpiresAt.Sub(now).Round(time.Second)/time.Second)),
		FamilyId:         t.FamilyID,
		Scopes:           t.Scopes,
	}
}

func (s *service) RevokeToken(ctx context.Context, req *connect.Request[tokenv1.RevokeTokenRequest]) (*connect.Response[tokenv1.RevokeTokenResponse], error) {
	m := req.Msg
	var n int
	var err error
	switch t := m.GetTarget().(type) {
	case *tokenv1.RevokeTokenRequest_RefreshToken:
		var reason eventsv1.RevocationReason
		if reason, err = issuer.ParseReason(m.GetReason(), eventsv1.RevocationReason_REVOCATION_REASON_CLIENT); err == nil {
			n, err = s.issuer.RevokeRefreshToken(ctx, t.RefreshToken, reason)
		}
	case *tokenv1.RevokeTokenRequest_FamilyId:
		var reason eventsv1.RevocationReason
		if reason, err = issuer.ParseReason(m.GetReason(), eventsv1.RevocationReason_REVOCATION_REASON_CLIENT); err == nil {
			n, err = s.issuer.RevokeFamily(ctx, t.FamilyId, reason)
		}
	case *tokenv1.RevokeTokenRequest_AccessToken:
		var reason eventsv1.RevocationReason
		if reason, err = issuer.ParseReason(m.GetReason(), eventsv1.RevocationReason_REVOCATION_REASON_CLIENT); err == nil {
			n, err = s.issuer.RevokeAccessToken(ctx, t.AccessToken, reason)
		}
	case *tokenv1.RevokeTokenRequest_Subject:
		var reason eventsv1.RevocationReason
		if reason, err = issuer.ParseReason(m.GetReason(), eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT); err == nil {
			n, err = s.issuer.RevokeSubject(ctx, t.Subject, reason)
		}
	default:
		return nil, oauthError(connect.CodeInvalidArgument, issuer.CodeInvalidRequest, "one of refresh_token, family_id, subject or access_token is required")
	}
	if err != nil {
		return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
	}
	return connect.NewResponse(&tokenv1.RevokeTokenResponse{RevokedFamilies: int64(n)}), nil
}

func (s *service) GetJWKS(_ context.Context, _ *connect.Request[tokenv1.GetJWKSRequest]) (*connect.Response[tokenv1.GetJWKSResponse], error) {
	keys := s.keys.JWKS()
	out := &tokenv1.GetJWKSResponse{Keys: make([]*tokenv1.JWK, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, &tokenv1.JWK{Kty: k.Kty, Kid: k.Kid, Use: k.Use, Alg: k.Alg, N: k.N, E: k.E, Crv: k.Crv, X: k.X, Y: k.Y})
	}
	return connect.NewResponse(out), nil
}

func (s *service) ValidateDPoP(context.Context, *connect.Request[tokenv1.ValidateDPoPRequest]) (*connect.Response[tokenv1.ValidateDPoPResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errUnimplementedDPoP)
}
