//go:build cgo

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/auth-platform/tokenservice/cmd/cryptod/cryptodtest"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	cryptov1 "github.com/auth-platform/tokenservice/proto/crypto/v1"
	"github.com/auth-platform/tokenservice/proto/crypto/v1/cryptov1connect"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// TestCryptodProvisionedKey: tokend (a child process) with
// CRYPTO_SIGNING_KEY=name signs with a key the operator made in cmd/cryptod
// (a child process too); tokens verify with go-jose against the served
// JWKS. The operator adds a version (RotateKey): within a key tick the new
// version is in the JWKS, after JWKS_PREPUBLISH it signs, and the tokens
// of the first version still verify against the JWKS.
func TestCryptodProvisionedKey(t *testing.T) {
	f := cryptodtest.New(t)
	listen := fmt.Sprintf("127.0.0.1:%d", eventlogtest.FreePorts(t, 1)[0])
	startCryptod(t, f, listen)
	ctx := context.Background()
	op := cryptov1connect.NewCryptoServiceClient(f.HTTPClient(t, f.ClientCert, f.ClientKey), "https://"+listen, connect.WithGRPC())
	const name = "token-signing"
	if _, err := op.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: name, Spec: cryptov1.KeySpec_KEY_SPEC_EC_P256})); err != nil {
		t.Fatal(err)
	}
	env := newChildEnv(t, map[string]string{
		"KMS_PROVIDER": "cryptosvc", "JWT_ALGORITHM": "ES256", "CRYPTO_SERVICE_ADDRESS": "https://" + listen,
		"CRYPTO_SERVICE_CA_FILE": f.CAFile, "CRYPTO_SERVICE_CERT_FILE": f.ClientCert, "CRYPTO_SERVICE_KEY_FILE": f.ClientKey,
		"CRYPTO_KEY_NAMESPACE": cryptodtest.Namespace, "CRYPTO_SIGNING_KEY": name, "CRYPTO_FALLBACK_ENABLED": "false",
		"JWKS_MAX_AGE": "1", "JWKS_PREPUBLISH": "2",
	})
	tokend := startChild(t, env)
	tokend.waitReady(env.baseURL(), 60*time.Second)

	hc := http1Client()
	rpc := tokenClient(hc, env.baseURL())
	issue := func() (string, string) {
		t.Helper()
		resp, err := generate(ctx, rpc, &tokenv1.GenerateTokensRequest{Subject: "s", ClientId: "web", Audience: []string{"api://e2e"}})
		if err != nil {
			t.Fatal(err)
		}
		keys, _, _ := fetchJWKS(t, hc, env.baseURL())
		return resp.AccessToken, kidOf(t, keys, resp.AccessToken)
	}
	first, v1 := issue()
	if keys, _, _ := fetchJWKS(t, hc, env.baseURL()); len(keys.Keys) != 1 {
		t.Fatalf("JWKS of %d keys, want the provisioned key only", len(keys.Keys))
	}

	if _, err := op.RotateKey(ctx, connect.NewRequest(&cryptov1.RotateKeyRequest{Namespace: cryptodtest.Namespace, Name: name})); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		if _, kid := issue(); kid != v1 {
			break
		}
		if time.Now().After(deadline) {
			keys, _, _ := fetchJWKS(t, hc, env.baseURL())
			t.Fatalf("still signing with version 1 after the operator's RotateKey (JWKS of %d keys):\n%s", len(keys.Keys), tokend.logTail(4<<10))
		}
		time.Sleep(250 * time.Millisecond)
	}
	keys, _, _ := fetchJWKS(t, hc, env.baseURL())
	if len(keys.Keys) != 2 {
		t.Fatalf("JWKS of %d keys after the rotation, want both versions", len(keys.Keys))
	}
	if _, err := verifyAccessToken(keys, first, jose.ES256); err != nil {
		t.Fatalf("a token of version 1 does not verify after the rotation: %v", err)
	}
}
