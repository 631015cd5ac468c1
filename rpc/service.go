package rpc

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/projections"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/signing"
)

// KeySource publishes the JWKS and lists the keys with their lifecycle;
// the projection set implements it.
type KeySource interface {
	JWKS() []signing.JWK
	Keys() ([]projections.Key, uint64)
}

// service implements tokenv1connect.TokenServiceHandler over an Issuer.
type service struct {
	issuer         *issuer.Issuer
	dpop           *dpop.Verifier
	keyAdmin       KeyAdmin
	keyCompromiser KeyCompromiser
	revocations    issuer.RevocationView
	families       FamilyLister
	feed           RevocationFeed
	watchers       chan struct{} // a slot per WatchRevocations stream
	perCaller      *watcherCounts
	tokenEndpoints []string // normalised
	keys           KeySource
	log            *slog.Logger
	metrics        *Metrics // may be nil
	now            func() time.Time
}

var _ tokenv1connect.TokenServiceHandler = (*service)(nil)

func (s *service) GenerateTokens(ctx context.Context, req *connect.Request[tokenv1.GenerateTokensRequest]) (*connect.Response[tokenv1.TokenResponse], error) {
	m := req.Msg
	id, _ := auth.FromContext(ctx)
	gr := issuer.GenerateRequest{
		Subject: m.GetSubject(), ClientID: m.GetClientId(), Audience: m.GetAudience(), Scopes: m.GetScopes(), Extra: m.GetExtraClaims(),
		AllowedClaims: id.ExtraClaims,
	}
	// The fields first: a request refused for them spends no DPoP proof
	// (claiming one appends an event).
	if err := gr.Validate(); err != nil {
		return nil, s.refuse(ctx, req.Spec().Procedure, err)
	}
	jkt, err := s.verifyTokenRequestProof(ctx, m.GetDpopProof(), m.GetHttpMethod(), m.GetHttpUri(), m.GetDpopJkt(), s.tokenEndpoints)
	if err != nil {
		return nil, s.refuse(ctx, req.Spec().Procedure, err)
	}
	gr.DPoPJKT = jkt
	t, err := s.issuer.Generate(ctx, gr)
	if err != nil {
		return nil, s.refuse(ctx, req.Spec().Procedure, err)
	}
	return s.tokenResponse(t), nil
}

func (s *service) RefreshTokens(ctx context.Context, req *connect.Request[tokenv1.RefreshTokensRequest]) (*connect.Response[tokenv1.TokenResponse], error) {
	m := req.Msg
	t, err := s.refresh(ctx, m.GetDpopProof(), m.GetHttpMethod(), m.GetHttpUri(), s.tokenEndpoints,
		issuer.RefreshRequest{RefreshToken: m.GetRefreshToken(), ClientID: m.GetClientId(), Scopes: m.GetScopes()})
	if err != nil {
		return nil, s.refuse(ctx, req.Spec().Procedure, err)
	}
	return s.tokenResponse(t), nil
}

// tokenResponse wraps t, with a fresh DPoP nonce when nonces are on.
func (s *service) tokenResponse(t issuer.Tokens) *connect.Response[tokenv1.TokenResponse] {
	resp := connect.NewResponse(s.response(t))
	if n := s.dpop.Nonce(); n != "" {
		resp.Header().Set(HeaderDPoPNonce, n)
	}
	return resp
}

// refuse maps err to a Connect error; a use_dpop_nonce refusal carries the
// fresh nonce to retry with (RFC 9449 §8).
func (s *service) refuse(ctx context.Context, procedure string, err error) error {
	ce := toConnect(ctx, s.log, procedure, err)
	if e, ok := ce.(*connect.Error); ok {
		if n := s.dpop.Nonce(); n != "" && dpop.Code(err) == dpop.CodeUseNonce {
			e.Meta().Set(HeaderDPoPNonce, n)
		}
	}
	return ce
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
	r := issuer.RevokeRequest{Reason: m.GetReason()}
	switch t := m.GetTarget().(type) {
	case *tokenv1.RevokeTokenRequest_RefreshToken:
		r.Target, r.Value = issuer.TargetRefreshToken, t.RefreshToken
	case *tokenv1.RevokeTokenRequest_AccessToken:
		r.Target, r.Value = issuer.TargetAccessToken, t.AccessToken
	case *tokenv1.RevokeTokenRequest_FamilyId:
		r.Target, r.Value = issuer.TargetFamily, t.FamilyId
	case *tokenv1.RevokeTokenRequest_Subject:
		r.Target, r.Value = issuer.TargetSubject, t.Subject
	}
	if id, ok := auth.FromContext(ctx); ok {
		r.ClientScope = id.ClientIDs // a caller restricted to some clients revokes only their families
	}
	n, err := s.issuer.Revoke(ctx, r)
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
