//go:build cgo

package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/cmd/cryptod/cryptodtest"
	"github.com/auth-platform/tokenservice/issuer"
	cryptov1 "github.com/auth-platform/tokenservice/proto/crypto/v1"
	"github.com/auth-platform/tokenservice/proto/crypto/v1/cryptov1connect"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/cryptosvc"
	"github.com/auth-platform/tokenservice/signing/pkcs11"
	"github.com/auth-platform/tokenservice/signing/pkcs11/hsmtest"
)

func startTokend(t *testing.T, vars map[string]string, log *syncBuffer) *Main {
	t.Helper()
	base := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0", "LOG_LEVEL": "info",
		"JWT_ALGORITHM": "ES256", "ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)),
	}
	for k, v := range vars {
		base[k] = v
	}
	cfg, err := ConfigFromEnv(func(k string) string { return base[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, cfg, slog.New(slog.NewJSONHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return m
}

func issueAndVerify(t *testing.T, m *Main) issuer.Tokens {
	t.Helper()
	tok, err := m.Issuer.Generate(context.Background(), issuer.GenerateRequest{Subject: "k", ClientID: "c", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Issuer.VerifyAccessToken(tok.AccessToken, true); err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestPKCS11Provider starts tokend with KMS_PROVIDER=pkcs11 on a SoftHSM2
// token that holds an orphan (a key pair of tokend's label prefix that no
// log references): the signing key is generated in the HSM, a fallback
// key is pre-published, tokens verify, the reconciler task deletes the
// orphan, and the PIN appears nowhere in the log.
func TestPKCS11Provider(t *testing.T) {
	tok := hsmtest.New(t)
	ctx := context.Background()
	crashed, err := pkcs11.New(ctx, tok.Config)
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := crashed.Create(ctx, signing.ES256, "intent-of-another-log")
	if err != nil {
		t.Fatal(err)
	}
	if err := crashed.Close(); err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	m := startTokend(t, map[string]string{"KMS_PROVIDER": "pkcs11", "PKCS11_MODULE": tok.Config.Module,
		"PKCS11_TOKEN_LABEL": tok.Config.TokenLabel, "PKCS11_PIN": hsmtest.PIN}, &log)
	if err := m.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	active, _ := m.Set.ActiveKey()
	if active.Backend != pkcs11.BackendName || active.IntentID == "" {
		t.Fatalf("active key %+v", active)
	}
	if _, ok := m.Keyring.Fallback(); !ok {
		t.Fatal("no fallback key published")
	}
	if got := issueAndVerify(t, m); got.KeyID != active.ID {
		t.Fatalf("signed by %s, want the HSM key %s", got.KeyID, active.ID)
	}
	deadline := time.Now().Add(30 * time.Second)
	for tok.Objects(t) != 2 { // the active key's pair only
		if time.Now().After(deadline) {
			t.Fatalf("%d objects on the token: the orphan %s was not reconciled", tok.Objects(t), orphan.Ref)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(log.String(), orphan.Ref) {
		t.Fatal("the reconciler's deletion is not logged")
	}
	if strings.Contains(log.String(), `"pin":"`+hsmtest.PIN) || !strings.Contains(log.String(), `"pin":"[redacted]"`) {
		t.Fatalf("the PIN in the log, or no redacted PIN:\n%s", log.String())
	}
}

// TestCryptoServiceProvider starts tokend with KMS_PROVIDER=cryptosvc and
// envelope encryption against cmd/cryptod on SoftHSM2, over mTLS: the
// signing key lives in the service, the fallback key is sealed with a
// data key the service wrapped, and a refresh inside the grace window
// returns the successor sealed the same way.
func TestCryptoServiceProvider(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	var log syncBuffer
	m := startTokend(t, map[string]string{"KMS_PROVIDER": "cryptosvc", "CRYPTO_SERVICE_ADDRESS": srv.URL,
		"CRYPTO_SERVICE_CA_FILE": f.CAFile, "CRYPTO_SERVICE_CERT_FILE": f.ClientCert, "CRYPTO_SERVICE_KEY_FILE": f.ClientKey,
		"CRYPTO_ENCRYPTION_ENABLED": "true", "REFRESH_REUSE_GRACE": "30"}, &log)
	ctx := context.Background()
	if err := m.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	active, _ := m.Set.ActiveKey()
	if active.Backend != cryptosvc.BackendName || !strings.HasPrefix(active.Ref, cryptodtest.Namespace+"/signing-") {
		t.Fatalf("active key %+v", active)
	}
	fb, ok := m.Keyring.Fallback()
	if !ok {
		t.Fatal("no fallback key published")
	}
	if k, _ := m.Set.Key(fb.KeyID()); len(k.Sealed) == 0 || k.Sealed[0] != 2 {
		t.Fatal("the fallback key is not sealed with the crypto service's envelope")
	}
	first := issueAndVerify(t, m)
	next, err := m.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: first.RefreshToken, ClientID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: first.RefreshToken, ClientID: "c"})
	if err != nil || again.RefreshToken != next.RefreshToken {
		t.Fatalf("a retry in the grace window: %v (same successor: %v)", err, again.RefreshToken == next.RefreshToken)
	}
}

// TestCryptoServiceProvisionedKey starts tokend with CRYPTO_SIGNING_KEY
// against cmd/cryptod: it signs with the operator's key (its primary
// version), creates no signing key in the service, and says so in its
// log; tokens verify.
func TestCryptoServiceProvisionedKey(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	ctx := context.Background()
	// The operator's key, made with the crypto.v1 API.
	op := cryptov1connect.NewCryptoServiceClient(f.HTTPClient(t, f.ClientCert, f.ClientKey), srv.URL, connect.WithGRPC())
	if _, err := op.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: "token-signing", Spec: cryptov1.KeySpec_KEY_SPEC_EC_P256})); err != nil {
		t.Fatal(err)
	}
	objects := f.Token.Objects(t)
	var log syncBuffer
	m := startTokend(t, map[string]string{"KMS_PROVIDER": "cryptosvc", "CRYPTO_SERVICE_ADDRESS": srv.URL,
		"CRYPTO_SERVICE_CA_FILE": f.CAFile, "CRYPTO_SERVICE_CERT_FILE": f.ClientCert, "CRYPTO_SERVICE_KEY_FILE": f.ClientKey,
		"CRYPTO_KEY_NAMESPACE": cryptodtest.Namespace, "CRYPTO_SIGNING_KEY": "token-signing", "CRYPTO_FALLBACK_ENABLED": "false"}, &log)
	if err := m.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	active, _ := m.Set.ActiveKey()
	if want := cryptodtest.Namespace + "/token-signing/1"; active.Ref != want || !active.Provisioned {
		t.Fatalf("active key %+v, want the provisioned %s", active, want)
	}
	if got := issueAndVerify(t, m); got.KeyID != active.ID {
		t.Fatalf("signed by %s, want %s", got.KeyID, active.ID)
	}
	if n := f.Token.Objects(t); n != objects {
		t.Fatalf("%d objects on the token, %d before tokend started", n, objects)
	}
	if !strings.Contains(log.String(), "signing with a key the operator provisioned") {
		t.Fatalf("the provisioned mode is not logged:\n%s", log.String())
	}
}
