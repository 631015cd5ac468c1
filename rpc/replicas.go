package rpc

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/family"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/rpc/auth"
)

// FamilyLister lists a subject's families from the families read model;
// projections.FamilyStore implements it.
type FamilyLister interface {
	ListFamilies(ctx context.Context, subject string) ([]*eventsv1.FamilyRecord, error)
}

// RevocationFeed streams revocation events from the log, after a stream
// sequence (0: from now on), until ctx ends or fn fails. subscribed is
// called once the revocations that existed at the start were delivered.
type RevocationFeed interface {
	WatchRevocations(ctx context.Context, after uint64, subscribed func(), fn func(subscriber.Revocation) error) error
}

func (s *service) IntrospectToken(ctx context.Context, req *connect.Request[tokenv1.IntrospectTokenRequest]) (*connect.Response[tokenv1.IntrospectTokenResponse], error) {
	m := req.Msg
	if m.GetToken() == "" {
		return nil, invalidRequest("token is required")
	}
	out, err := s.introspect(ctx, m.GetToken(), m.GetAudience())
	if err != nil {
		return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
	}
	return connect.NewResponse(out), nil
}

// introspect answers for a token of either kind (RFC 7662 §2.2), for the
// caller of ctx: one restricted to some audiences learns nothing of tokens
// for others (§4), and audience, if set, must be one of the token's too.
// IntrospectToken and the introspection endpoint both answer with it.
func (s *service) introspect(ctx context.Context, tok, audience string) (*tokenv1.IntrospectTokenResponse, error) {
	id, _ := auth.FromContext(ctx)
	// A JWT has two dots, a refresh token one.
	if strings.Count(tok, ".") == 2 {
		return s.introspectAccess(tok, audience, id.Audiences), nil
	}
	st, ok, err := s.issuer.IntrospectRefreshToken(ctx, tok)
	if err != nil {
		return nil, err
	}
	if !ok || !issuer.AudienceAcceptable(st.GetAudience(), audience, id.Audiences) {
		return inactive(), nil
	}
	out := &tokenv1.IntrospectTokenResponse{
		Active: proto.Bool(true), Scope: strings.Join(st.GetScopes(), " "), ClientId: st.GetClientId(), TokenType: "refresh_token",
		Exp: unixSeconds(st.GetRefreshExpiresAt().AsTime()), Iat: unixSeconds(st.GetCreatedAt().AsTime()), Sub: st.GetSubject(),
		Aud: st.GetAudience(), Sid: st.GetFamilyId(),
	}
	if st.GetRotatedAt().IsValid() {
		out.Iat = unixSeconds(st.GetRotatedAt().AsTime()) // when this token was issued
	}
	if jkt := st.GetDpopJkt(); jkt != "" {
		out.Cnf = &tokenv1.Confirmation{Jkt: jkt}
	}
	return out, nil
}

// introspectAccess answers for an access token (issuer.IntrospectAccessToken).
func (s *service) introspectAccess(tok, audience string, allowed []string) *tokenv1.IntrospectTokenResponse {
	at, ok := s.issuer.IntrospectAccessToken(tok, s.revocations, audience, allowed)
	if !ok {
		return inactive()
	}
	out := &tokenv1.IntrospectTokenResponse{
		Active: proto.Bool(true), Scope: at.Scope, ClientId: at.ClientID, TokenType: "Bearer",
		Exp: unixSeconds(at.Expiry), Iat: unixSeconds(at.IssuedAt), Sub: at.Subject, Aud: at.Audience,
		Iss: at.Issuer, Jti: at.ID, Sid: at.FamilyID,
	}
	if at.JKT != "" {
		out.TokenType, out.Cnf = "DPoP", &tokenv1.Confirmation{Jkt: at.JKT}
	}
	return out
}

// unixSeconds is t as seconds since the epoch, clamped to uint32.
func unixSeconds(t time.Time) uint32 {
	return uint32(min(max(t.Unix(), 0), math.MaxUint32))
}

// inactive is the whole answer for a token that is not active (RFC 7662
// §2.2): nothing about an unknown, expired or revoked token is disclosed.
func inactive() *tokenv1.IntrospectTokenResponse {
	return &tokenv1.IntrospectTokenResponse{Active: proto.Bool(false)}
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
		Scopes: st.GetScopes(), Status: family.Status(st, now),
	}
	if st.GetGeneration() > 1 {
		f.LastRefreshedAt = st.GetRotatedAt()
	}
	if family.Revoked(st) {
		f.RevocationReason, f.RevokedAt = events.ReasonName(st.GetRevokedReason()), st.GetRevokedAt()
	}
	return f
}

// heartbeatEvery is how often an idle WatchRevocations stream gets a
// heartbeat.
const heartbeatEvery = 30 * time.Second

func (s *service) WatchRevocations(ctx context.Context, req *connect.Request[tokenv1.WatchRevocationsRequest], stream *connect.ServerStream[tokenv1.WatchRevocationsResponse]) error {
	if s.feed == nil {
		return connect.NewError(connect.CodeUnimplemented, errors.New("revocation feed is not configured"))
	}
	select {
	case s.watchers <- struct{}{}:
		defer func() { <-s.watchers }()
	default:
		return connect.NewError(connect.CodeResourceExhausted, errors.New("too many revocation watchers"))
	}
	// One caller may not take every slot: authenticated callers have a
	// share of their own.
	if id, ok := auth.FromContext(ctx); ok && id.Name != "" {
		if !s.perCaller.acquire(id.Name) {
			return connect.NewError(connect.CodeResourceExhausted, errors.New("too many revocation watchers for this caller"))
		}
		defer s.perCaller.release(id.Name)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex // Send is not safe for concurrent use
	send := func(m *tokenv1.WatchRevocationsResponse) error {
		mu.Lock()
		defer mu.Unlock()
		if err := stream.Send(m); err != nil {
			cancel(err)
			return err
		}
		return nil
	}
	heartbeat := func() error {
		return send(&tokenv1.WatchRevocationsResponse{Event: &tokenv1.WatchRevocationsResponse_Heartbeat{Heartbeat: &tokenv1.Heartbeat{At: ts(s.now())}}})
	}
	// The first heartbeat goes out once the stream's consumer is in place
	// and the backlog delivered: a client that has it receives every
	// revocation appended from then on.
	subscribed := make(chan struct{})
	var heartbeats sync.WaitGroup
	// The heartbeat goroutine must be gone before the handler returns:
	// Connect closes the response then, and a late Send would race it.
	defer heartbeats.Wait()
	defer cancel(nil)
	heartbeats.Go(func() {
		select {
		case <-subscribed:
		case <-ctx.Done():
			return
		}
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if heartbeat() != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	})
	err := s.feed.WatchRevocations(ctx, req.Msg.GetAfterSequence(), func() {
		if heartbeat() == nil {
			close(subscribed)
		}
	}, func(r subscriber.Revocation) error {
		out := &tokenv1.Revocation{Sequence: r.Seq, Reason: r.Reason, RevokedAt: ts(r.RevokedAt)}
		if r.FamilyID != "" {
			out.Target = &tokenv1.Revocation_FamilyId{FamilyId: r.FamilyID}
			out.FamilySubject, out.AccessExpiresAt = r.Subject, ts(r.AccessExpiresAt)
		} else {
			out.Target = &tokenv1.Revocation_Subject{Subject: r.Subject}
		}
		return send(&tokenv1.WatchRevocationsResponse{Event: &tokenv1.WatchRevocationsResponse_Revocation{Revocation: out}})
	})
	if ctx.Err() != nil {
		return nil // the client went away, or the server is stopping
	}
	return toConnect(ctx, s.log, req.Spec().Procedure, err)
}

// watcherCounts counts the WatchRevocations streams of each caller.
type watcherCounts struct {
	mu    sync.Mutex
	max   int
	count map[string]int
}

func (w *watcherCounts) acquire(caller string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.count[caller] >= w.max {
		return false
	}
	w.count[caller]++
	return true
}

func (w *watcherCounts) release(caller string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.count[caller]--; w.count[caller] <= 0 {
		delete(w.count, caller)
	}
}
