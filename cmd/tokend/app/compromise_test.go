package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/signing/keyring"
)

// failingRevoker fails as a tokend killed after the rotation of a
// compromised key and before the revocation of its families.
type failingRevoker struct{}

var errKilled = errors.New("killed before the revocation")

func (failingRevoker) RevokeSignedBy(context.Context, string) (int, error) { return 0, errKilled }

// TestRestartFinishesKeyCompromise: a key compromise interrupted between
// the rotation and the revocation is finished by the next start, before
// it serves: the families the key signed are revoked and the compromise
// is resolved.
func TestRestartFinishesKeyCompromise(t *testing.T) {
	dir := t.TempDir()
	key := map[string]string{"ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))}
	ctx := context.Background()
	m := startInDir(t, dir, key)
	var toks []issuer.Tokens
	for range 2 {
		tok, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "k", ClientID: "c", Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	c, err := keyring.NewResponder(m.Keyring, failingRevoker{}).Compromise(ctx, true)
	if !errors.Is(err, errKilled) || c.Previous != toks[0].KeyID || c.KeyID == c.Previous {
		t.Fatalf("interrupted compromise: %+v, %v", c, err)
	}
	if p := m.Set.PendingCompromises(); len(p) != 1 {
		t.Fatalf("pending compromises before the restart: %+v", p)
	}
	_ = m.Close(ctx)

	m = startInDir(t, dir, key)
	defer m.Close(ctx)
	if p := m.Set.PendingCompromises(); len(p) != 0 {
		t.Fatalf("pending compromises after the restart: %+v", p)
	}
	if cur, _ := m.Set.ActiveKey(); cur.ID != c.KeyID {
		t.Fatalf("active key %s after the restart, want %s", cur.ID, c.KeyID)
	}
	for _, tok := range toks {
		if _, err := m.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "c"}); !errors.Is(err, issuer.ErrFamilyRevoked) {
			t.Fatalf("refresh of a family the compromised key signed: %v", err)
		}
	}
}
