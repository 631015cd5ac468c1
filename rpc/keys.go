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

// KeyAdmin stages signing-key rotations (admin RPCs).
type KeyAdmin interface {
	Rotate(ctx context.Context, immediate bool) (keyring.Rotation, error)
}

// KeyCompromiser carries out the key-compromise command: the rotation at
// once and, if asked, the revocation of the families the key signed, as
// one command recorded in the log (keyring.Responder).
type KeyCompromiser interface {
	Compromise(ctx context.Context, revokeFamilies bool) (keyring.Containment, error)
}

func (s *service) RotateSigningKey(ctx context.Context, req *connect.Request[tokenv1.RotateSigningKeyRequest]) (*connect.Response[tokenv1.RotateSigningKeyResponse], error) {
	m := req.Msg
	if m.GetRevokeFamilies() && !m.GetImmediate() {
		return nil, invalidRequest("revoke_families goes with immediate (a compromised key)")
	}
	if m.GetImmediate() {
		c, err := s.keyCompromiser.Compromise(ctx, m.GetRevokeFamilies())
		if err != nil {
			return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
		}
		return connect.NewResponse(&tokenv1.RotateSigningKeyResponse{KeyId: c.KeyID, PreviousKeyId: c.Previous, ActivatesAt: ts(c.ActivatesAt),
			RevokedFamilies: int64(c.RevokedFamilies)}), nil
	}
	r, err := s.keyAdmin.Rotate(ctx, false)
	if err != nil {
		return nil, toConnect(ctx, s.log, req.Spec().Procedure, err)
	}
	return connect.NewResponse(&tokenv1.RotateSigningKeyResponse{KeyId: r.KeyID, PreviousKeyId: r.Previous, ActivatesAt: ts(r.ActivatesAt)}), nil
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
