package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
)

// TestKMSProvider starts tokend with KMS_PROVIDER=aws against the local-kms
// emulator: its signing key is created in KMS, a fallback key is
// pre-published, and issued tokens verify.
func TestKMSProvider(t *testing.T) {
	e := kmstest.Start(t)
	vars := kmsVars(t, e.URL)
	m, ctx := startKMS(t, vars)
	if !m.Config.CryptoFallback {
		t.Fatal("fallback is not on by default with aws")
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

// TestKMSProvisionedKey starts tokend with KMS_PROVIDER=aws and
// KMS_KEY_ID against local-kms: it signs with that key and creates none.
func TestKMSProvisionedKey(t *testing.T) {
	e := kmstest.Start(t)
	key := e.CreateKey(t, types.KeySpecEccNistP256)
	vars := kmsVars(t, e.URL, "KMS_KEY_ID", key, "CRYPTO_FALLBACK_ENABLED", "false")
	m, ctx := startKMS(t, vars)
	active, _ := m.Set.ActiveKey()
	if active.Backend != awskms.BackendName || !active.Provisioned || !strings.Contains(active.Ref, key) {
		t.Fatalf("active key %+v, want the provisioned %s", active, key)
	}
	tok, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "k", ClientID: "c", Audience: []string{"api"}})
	if err != nil || tok.KeyID != active.ID {
		t.Fatalf("token: %v (kid %s, active %s)", err, tok.KeyID, active.ID)
	}
	if _, err := m.Issuer.VerifyAccessToken(tok.AccessToken, true); err != nil {
		t.Fatal(err)
	}
	out, err := e.Client.ListKeys(ctx, &kms.ListKeysInput{})
	if err != nil || len(out.Keys) != 1 {
		t.Fatalf("KMS keys %v (%v), want the operator's one", out, err)
	}

	// A KMS_KEY_ID that KMS does not hold: the start fails and names it.
	vars["KMS_KEY_ID"], vars["DATA_DIR"] = "no-such-key", t.TempDir()
	cfg, err := ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, cfg, NewLogger(cfg)); err == nil || !strings.Contains(err.Error(), "KMS_KEY_ID=no-such-key") {
		t.Fatalf("start with an unknown KMS_KEY_ID: %v, want an error naming it", err)
	}
}

// TestKMSOperationsCounted puts a proxy that counts every KMS request by
// its X-Amz-Target between tokend and the local-kms emulator, and checks
// that token_service_kms_operations_total counts each operation exactly as
// often as KMS received it: key creation, public keys, signatures,
// whatever part of tokend made the call, retries included.
func TestKMSOperationsCounted(t *testing.T) {
	counter := kmstest.Start(t).Count(t)
	// The first answers of GetPublicKey and ListKeys are lost: tokend
	// retries them (signing.Retry), and each attempt is a request KMS
	// receives and a count, since the SDK's own retries are off.
	counter.LoseAnswers("GetPublicKey", 1, http.StatusServiceUnavailable)
	counter.LoseAnswers("ListKeys", 1, http.StatusInternalServerError)
	m, ctx := startKMS(t, kmsVars(t, counter.URL))
	for range 3 {
		if _, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "k", ClientID: "c", Audience: []string{"api"}}); err != nil {
			t.Fatal(err)
		}
	}

	counted := map[string]float64{}
	fams, err := m.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "token_service_kms_operations_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "operation" {
					counted[l.GetValue()] += s.GetCounter().GetValue()
				}
			}
		}
	}
	seen := counter.Received()
	for _, op := range append(slices.Clone(awskms.Operations), awskms.OtherOperation) {
		if counted[op] != float64(seen[op]) {
			t.Errorf("%s: counted %v, KMS received %v", op, counted[op], seen[op])
		}
	}
	for op := range seen {
		if !slices.Contains(awskms.Operations, op) {
			t.Errorf("KMS received %s, which awskms.Operations does not list", op)
		}
	}
	for _, op := range []string{"CreateKey", "GetPublicKey", "Sign"} {
		if seen[op] == 0 {
			t.Errorf("no %s call: the test did not exercise it", op)
		}
	}
	for _, op := range []string{"GetPublicKey", "ListKeys"} {
		if seen[op] < 2 {
			t.Errorf("%s received %d times: the lost answer was not retried", op, seen[op])
		}
	}
	t.Logf("KMS calls: %v", seen)
}

// kmsVars are the variables of a tokend that signs with AWS KMS at
// endpoint (the emulator, or a Counter in front of it), and extra (name,
// value pairs); the AWS SDK reads its standard settings from the process.
func kmsVars(t *testing.T, endpoint string, extra ...string) map[string]string {
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	vars := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0", "LOG_LEVEL": "error",
		"JWT_ALGORITHM": "ES256", "KMS_PROVIDER": "aws", "KMS_ENDPOINT": endpoint,
		"ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)),
	}
	for i := 0; i+1 < len(extra); i += 2 {
		vars[extra[i]] = extra[i+1]
	}
	return vars
}

// startKMS starts tokend with vars, moves its key lifecycle once, and
// stops it when t ends.
func startKMS(t *testing.T, vars map[string]string) (*Main, context.Context) {
	t.Helper()
	cfg, err := ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	m, err := Start(ctx, cfg, NewLogger(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	if err := m.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	return m, ctx
}
