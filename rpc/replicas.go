package rpc

import (
	"context"
	"errors"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// FamilyLister lists a subject's families from the families read model;
// projections.FamilyStore implements it.
type FamilyLister interface {
	ListFamilies(ctx context.Context, subject string) ([]*eventsv1.FamilyRecord, error)
}

// RevocationFeed streams revocation events from the log, after a stream
// sequence (0: from now on), until ctx ends or fn fails.
type RevocationFeed interface {
	WatchRevocations(ctx context.Context, after uint64, fn func(subscriber.Revocation) error) error
}

func (s *service) IntrospectToken(ctx context.Context, req *connect.Request[tokenv1.IntrospectTokenRequest]) (*connect.Response[tokenv1.IntrospectTokenResponse], error) {
	m := req.Msg
	tok := m.GetToken()
	if tok == "" {
		return nil, invalidRequest("token is required")
	}
	// A JWT has two dots, a refresh token one: the hint only orders the
	// attempts, and a token of the other kind is still found.
	if strings.Count(tok, ".") == 2 {
		return connect.NewResponse(s.introspectAccess(tok)), nil
	}
	st, ok, err := s.issuer.IntrospectRefreshToken(ctx, tok)
	if err != nil {
		return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
	}
	if !ok {
		return connect.NewResponse(&tokenv1.IntrospectTokenResponse{}), nil
	}
	out := &tokenv1.IntrospectTokenResponse{
		Active: true, Scope: strings.Join(st.GetScopes(), " "), ClientId: st.GetClientId(), TokenType: "refresh_token",
		Exp: st.GetRefreshExpiresAt().AsTime().Unix(), Iat: st.GetCreatedAt().AsTime().Unix(), Sub: st.GetSubject(),
		Aud: st.GetAudience(), Sid: st.GetFamilyId(),
	}
	if st.GetRotatedAt().IsValid() && st.GetGeneration() > 0 {
		out.Iat = st.GetRotatedAt().AsTime().Unix()
	}
	if jkt := st.GetDpopJkt(); jkt != "" {
		out.Cnf = &tokenv1.Confirmation{Jkt: jkt}
	}
	return connect.NewResponse(out), nil
}

// introspectAccess answers for an access token: active if its signature,
// issuer and lifetime check out and this replica's projections know no
// revocation of its family or subject.
func (s *service) introspectAccess(tok string) *tokenv1.IntrospectTokenResponse {
	at, err := s.issuer.VerifyAccessToken(tok, true)
	if err != nil || s.revoked(at) {
		return &tokenv1.IntrospectTokenResponse{}
	}
	out := &tokenv1.IntrospectTokenResponse{
		Active: true, Scope: at.Scope, ClientId: at.ClientID, TokenType: "Bearer",
		Exp: at.Expiry.Unix(), Iat: at.IssuedAt.Unix(), Sub: at.Subject, Aud: at.Audience,
		Iss: at.Issuer, Jti: at.ID, Sid: at.FamilyID,
	}
	if at.JKT != "" {
		out.TokenType, out.Cnf = "DPoP", &tokenv1.Confirmation{Jkt: at.JKT}
	}
	return out
}

func (s *service) ListFamilies(ctx context.Context, req *connect.Request[tokenv1.ListFamiliesRequest]) (*connect.Response[tokenv1.ListFamiliesResponse], error) {
	m := req.Msg
	if m.GetSubject() == "" || len(m.GetSubject()) > issuer.MaxSubjectLen {
		return nil, invalidRequest("subject is required, at most 255 bytes")
	}
	if s.families == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("the families read model is not configured"))
	}
	recs, err := s.families.ListFamilies(ctx, m.GetSubject())
	if err != nil {
		return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
	}
	now := s.now()
	out := &tokenv1.ListFamiliesResponse{}
	for _, r := range recs {
		f := familyOf(r.GetState(), now)
		if f.Status != "active" && !m.GetIncludeInactive() {
			continue
		}
		out.Families = append(out.Families, f)
	}
	return connect.NewResponse(out), nil
}

func familyOf(st *eventsv1.FamilyState, now time.Time) *tokenv1.Family {
	f := &tokenv1.Family{
		FamilyId: st.GetFamilyId(), ClientId: st.GetClientId(), CreatedAt: st.GetCreatedAt(),
		Generation: st.GetGeneration(), DpopJkt: st.GetDpopJkt(), RefreshExpiresAt: st.GetRefreshExpiresAt(),
		Scopes: st.GetScopes(), Status: "active",
	}
	if st.GetGeneration() > 0 {
		f.LastRefreshedAt = st.GetRotatedAt()
	}
	switch {
	case st.GetStatus() == eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED:
		f.Status, f.RevocationReason, f.RevokedAt = "revoked", projections.ReasonName(st.GetRevokedReason()), st.GetRevokedAt()
	case !now.Before(st.GetRefreshExpiresAt().AsTime()):
		f.Status = "expired"
	}
	return f
}

func (s *service) WatchRevocations(ctx context.Context, req *connect.Request[tokenv1.WatchRevocationsRequest], stream *connect.ServerStream[tokenv1.Revocation]) error {
	if s.feed == nil {
		return connect.NewError(connect.CodeUnimplemented, errors.New("revocation feed is not configured"))
	}
	select {
	case s.watchers <- struct{}{}:
		defer func() { <-s.watchers }()
	default:
		return connect.NewError(connect.CodeResourceExhausted, errors.New("too many revocation watchers"))
	}
	err := s.feed.WatchRevocations(ctx, req.Msg.GetAfterSequence(), func(r subscriber.Revocation) error {
		out := &tokenv1.Revocation{Sequence: r.Seq, Reason: r.Reason, RevokedAt: ts(r.RevokedAt)}
		if r.FamilyID != "" {
			out.Target = &tokenv1.Revocation_FamilyId{FamilyId: r.FamilyID}
			out.FamilySubject, out.AccessExpiresAt = r.Subject, ts(r.AccessExpiresAt)
		} else {
			out.Target = &tokenv1.Revocation_Subject{Subject: r.Subject}
		}
		return stream.Send(out)
	})
	if ctx.Err() != nil {
		return nil // the client went away, or the server is stopping
	}
	return toConnect(ctx, s.log, req.Spec().Procedure, err)
}
