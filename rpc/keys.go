package rpc

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/projections"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/signing/keyring"
)

// KeyAdmin is what the admin RPCs need of the signing keys.
type KeyAdmin interface {
	Rotate(ctx context.Context, immediate bool) (keyring.Rotation, error)
}

func (s *service) RotateSigningKey(ctx context.Context, req *connect.Request[tokenv1.RotateSigningKeyRequest]) (*connect.Response[tokenv1.RotateSigningKeyResponse], error) {
	m := req.Msg
	if m.GetRevokeFamilies() && !m.GetImmediate() {
		return nil, invalidRequest("revoke_families goes with immediate (a compromised key)")
	}
	r, err := s.keyAdmin.Rotate(ctx, m.GetImmediate())
	if err != nil {
		return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
	}
	out := &tokenv1.RotateSigningKeyResponse{KeyId: r.KeyID, PreviousKeyId: r.Previous, ActivatesAt: ts(r.ActivatesAt)}
	if m.GetRevokeFamilies() && r.Previous != "" {
		n, err := s.issuer.RevokeSignedBy(ctx, r.Previous)
		out.RevokedFamilies = int64(n)
		if err != nil {
			return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
		}
	}
	return connect.NewResponse(out), nil
}

func (s *service) ListSigningKeys(_ context.Context, _ *connect.Request[tokenv1.ListSigningKeysRequest]) (*connect.Response[tokenv1.ListSigningKeysResponse], error) {
	out := &tokenv1.ListSigningKeysResponse{}
	keys, _ := s.keys.Keys()
	for _, k := range keys {
		out.Keys = append(out.Keys, &tokenv1.SigningKey{
			KeyId: k.ID, Algorithm: string(k.Algorithm), Backend: k.Backend, Status: projections.StatusName(k.Status),
			GeneratedAt: ts(k.GeneratedAt), PublishedAt: ts(k.PublishedAt), ActivatedAt: ts(k.ActivatedAt),
			RetiredAt: ts(k.RetiredAt), RetainUntil: ts(k.RetainUntil), BackendRef: k.Ref,
		})
	}
	return connect.NewResponse(out), nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
