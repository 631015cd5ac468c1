package rpc_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// TestRotateSigningKey: a scheduled rotation stages a key; immediate with
// revoke_families replaces the key at once and revokes the families it
// signed, and the response names both keys and the count; revoke_families
// without immediate is refused.
func TestRotateSigningKey(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	var rts []string
	for range 2 {
		tok, err := s.client.GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "alice", ClientId: "web", Audience: []string{"api"}}))
		if err != nil {
			t.Fatal(err)
		}
		rts = append(rts, tok.Msg.GetRefreshToken())
	}
	old, _ := s.env.Set.ActiveKey()

	if _, err := s.client.RotateSigningKey(ctx, connect.NewRequest(&tokenv1.RotateSigningKeyRequest{RevokeFamilies: true})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("revoke_families without immediate: %v, want invalid_argument", err)
	}
	staged, err := s.client.RotateSigningKey(ctx, connect.NewRequest(&tokenv1.RotateSigningKeyRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if staged.Msg.GetPreviousKeyId() != old.ID || staged.Msg.GetKeyId() == old.ID || staged.Msg.GetActivatesAt() == nil || staged.Msg.GetRevokedFamilies() != 0 {
		t.Fatalf("staged rotation %v", staged.Msg)
	}

	resp, err := s.client.RotateSigningKey(ctx, connect.NewRequest(&tokenv1.RotateSigningKeyRequest{Immediate: true, RevokeFamilies: true}))
	if err != nil {
		t.Fatal(err)
	}
	m := resp.Msg
	cur, _ := s.env.Set.ActiveKey()
	if m.GetPreviousKeyId() != old.ID || m.GetKeyId() != cur.ID || m.GetKeyId() == old.ID || m.GetKeyId() == staged.Msg.GetKeyId() || m.GetRevokedFamilies() != 2 {
		t.Fatalf("compromise response %v (old key %s, active %s, staged %s)", m, old.ID, cur.ID, staged.Msg.GetKeyId())
	}
	for _, rt := range rts {
		_, err := s.client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: rt, ClientId: "web"}))
		if _, oauth := oauthCode(t, err); oauth != "invalid_grant" {
			t.Fatalf("refresh after the compromise: %v", err)
		}
	}
}
