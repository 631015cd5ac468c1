package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// startInDir starts tokend on the embedded server whose files are in dir,
// with ES256 keys and the variables of extra; the caller closes it (to
// start it again on the same files).
func startInDir(t *testing.T, dir string, extra map[string]string) *Main {
	t.Helper()
	vars := map[string]string{"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": dir, "NATS_LISTEN": "127.0.0.1:0",
		"LOG_LEVEL": "error", "JWT_ALGORITHM": "ES256"}
	for k, v := range extra {
		vars[k] = v
	}
	cfg, err := ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, cfg, NewLogger(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestEncryptionKeyRotation: tokend is restarted with a new ENCRYPTION_KEY
// and the old one in ENCRYPTION_KEY_PREVIOUS; it re-seals the signing keys
// and the embedded server re-encrypts its files, so a later start with the
// new key alone still has every family and key; the families read model
// is re-sealed too, so it is listed with the new key alone.
func TestEncryptionKeyRotation(t *testing.T) {
	dir := t.TempDir()
	oldKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	newKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
	start := func(extra map[string]string) *Main {
		t.Helper()
		return startInDir(t, dir, extra)
	}
	ctx := context.Background()
	m := start(map[string]string{"ENCRYPTION_KEY": oldKey})
	tok, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "r", ClientID: "c", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	// A family with no event after the rotation: only the re-seal pass
	// moves its entry to the new key.
	if _, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "untouched", ClientID: "c", Audience: []string{"api"}}); err != nil {
		t.Fatal(err)
	}
	listed(t, m.Families, "untouched")
	_ = m.Close(ctx)

	m = start(map[string]string{"ENCRYPTION_KEY": newKey, "ENCRYPTION_KEY_PREVIOUS": oldKey, "LOG_LEVEL": "debug"})
	if err := m.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Issuer.VerifyAccessToken(tok.AccessToken, true); err != nil {
		t.Fatal(err)
	}
	second, err := m.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "c"})
	if err != nil {
		t.Fatalf("refresh during the key change: %v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(newKey)
	if err != nil {
		t.Fatal(err)
	}
	onlyNew, err := seal.New(rand.Reader, raw)
	if err != nil {
		t.Fatal(err)
	}
	newKeyStore, err := projections.NewFamilyStore(m.Log.JetStream(), projections.StoreConfig{Sealer: onlyNew})
	if err != nil {
		t.Fatal(err)
	}
	listed(t, newKeyStore, "untouched")
	// The families read model follows the log after the rotation too
	// (nats-server cannot re-encrypt a durable consumer's store).
	if _, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "after-rotation", ClientID: "c", Audience: []string{"api"}}); err != nil {
		t.Fatal(err)
	}
	listed(t, m.Families, "after-rotation")
	_ = m.Close(ctx)

	m = start(map[string]string{"ENCRYPTION_KEY": newKey})
	defer m.Close(ctx)
	if _, err := m.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: second.RefreshToken, ClientID: "c"}); err != nil {
		t.Fatalf("refresh with the new key alone: %v", err)
	}
	if _, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "r", ClientID: "c", Audience: []string{"api"}}); err != nil {
		t.Fatalf("signing with a re-sealed key: %v", err)
	}
	listed(t, m.Families, "untouched")
}

// listed waits until store lists one family of subject, and fails t if
// the listing fails (an entry that does not open) or times out.
func listed(t *testing.T, store *projections.FamilyStore, subject string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var last error
	for {
		recs, err := store.ListFamilies(ctx, subject)
		if err == nil && len(recs) == 1 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s's family not listed: %d, %v (before: %v)", subject, len(recs), err, last)
		}
		if err != nil {
			last = err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
