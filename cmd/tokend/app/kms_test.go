package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
)

// TestKMSProvider starts tokend with KMS_PROVIDER=aws against the local-kms
// emulator: its signing key is created in KMS, a fallback key is
// pre-published, and issued tokens verify.
func TestKMSProvider(t *testing.T) {
	e := kmstest.Start(t)
	// The AWS SDK reads its standard settings from the process.
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	vars := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0", "LOG_LEVEL": "error",
		"JWT_ALGORITHM": "ES256", "KMS_PROVIDER": "aws", "KMS_ENDPOINT": e.URL,
		"ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)),
	}
	cfg, err := ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.CryptoFallback {
		t.Fatal("fallback is not on by default with aws")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, cfg, NewLogger(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if err := m.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	active, _ := m.Set.ActiveKey()
	if active.Backend != awskms.BackendName {
		t.Fatalf("active key of backend %q", active.Backend)
	}
	if _, ok := m.Keyring.Fallback(); !ok {
		t.Fatal("no fallback key published")
	}
	tok, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "k", ClientID: "c", Audience: []string{"api"}})
	if err != nil || tok.KeyID != active.ID {
		t.Fatalf("token: %v (kid %s, active %s)", err, tok.KeyID, active.ID)
	}
	if _, err := m.Issuer.VerifyAccessToken(tok.AccessToken, true); err != nil {
		t.Fatal(err)
	}
}
