package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCryptoConfig: the HSM and crypto-service settings, their defaults,
// and errors that name the variable.
func TestCryptoConfig(t *testing.T) {
	dir := t.TempDir()
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte("pin-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "api-key")
	if err := os.WriteFile(keyFile, []byte("api-key-from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	pkcs11Vars := map[string]string{"KMS_PROVIDER": "pkcs11", "JWT_ALGORITHM": "ES384", "PKCS11_MODULE": "/m.so", "PKCS11_TOKEN_LABEL": "t", "PKCS11_PIN_FILE": pinFile}
	c, err := ConfigFromEnv(env(pkcs11Vars))
	if err != nil {
		t.Fatal(err)
	}
	if c.KMSProvider != "pkcs11" || string(c.PKCS11PIN) != "pin-from-file" || c.PKCS11LabelPrefix != defaultPKCS11LabelPrefix || !c.CryptoFallback {
		t.Fatalf("pkcs11: %+v", c)
	}
	c, err = ConfigFromEnv(env(map[string]string{"CRYPTO_SIGNING_ENABLED": "true", "CRYPTO_SERVICE_ADDRESS": "https://cryptod:8443",
		"CRYPTO_SERVICE_API_KEY_FILE": keyFile, "CRYPTO_ENCRYPTION_ENABLED": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.KMSProvider != "cryptosvc" || !c.CryptoSigning || !c.CryptoEncryption || !c.CryptoFallback || c.CryptoKeyNamespace != "tokenservice" ||
		string(c.CryptoServiceAPIKey) != "api-key-from-file" {
		t.Fatalf("cryptosvc: %+v", c)
	}
	// CRYPTO_SIGNING_KEY: a provisioned key, following its primary
	// version or pinned to one.
	for _, tc := range []struct {
		value   string
		name    string
		version uint32
	}{{"token-signing", "token-signing", 0}, {"token-signing/3", "token-signing", 3}} {
		c, err := ConfigFromEnv(env(map[string]string{"CRYPTO_SIGNING_ENABLED": "true", "CRYPTO_SERVICE_ADDRESS": "https://cryptod:8443", "CRYPTO_SIGNING_KEY": tc.value}))
		if err != nil {
			t.Fatal(err)
		}
		if c.CryptoSigningKey != tc.name || c.CryptoSigningKeyVersion != tc.version {
			t.Fatalf("CRYPTO_SIGNING_KEY=%s: name %q version %d", tc.value, c.CryptoSigningKey, c.CryptoSigningKeyVersion)
		}
	}
	// Secrets never print.
	for _, out := range []string{fmt.Sprintf("%v %+v %#v", c, c, c), fmt.Sprint(c.PKCS11PIN)} {
		if strings.Contains(out, "api-key-from-file") || strings.Contains(out, "pin-from-file") {
			t.Fatalf("a secret printed: %s", out)
		}
	}

	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"KMS_PROVIDER": "pkcs11"}, "PKCS11_MODULE"},
		{map[string]string{"KMS_PROVIDER": "pkcs11", "PKCS11_MODULE": "/m.so"}, "PKCS11_TOKEN_LABEL"},
		{map[string]string{"KMS_PROVIDER": "pkcs11", "PKCS11_MODULE": "/m.so", "PKCS11_TOKEN_LABEL": "t"}, "PKCS11_PIN"},
		{map[string]string{"KMS_PROVIDER": "pkcs11", "PKCS11_PIN_FILE": filepath.Join(dir, "none")}, "PKCS11_PIN_FILE"},
		{map[string]string{"KMS_PROVIDER": "pkcs11", "JWT_ALGORITHM": "EdDSA"}, "JWT_ALGORITHM"},
		{map[string]string{"KMS_PROVIDER": "cryptosvc"}, "CRYPTO_SERVICE_ADDRESS"},
		{map[string]string{"CRYPTO_ENCRYPTION_ENABLED": "true"}, "CRYPTO_SERVICE_ADDRESS"},
		{map[string]string{"CRYPTO_ENCRYPTION_ENABLED": "maybe"}, "CRYPTO_ENCRYPTION_ENABLED"},
		{map[string]string{"KMS_PROVIDER": "aws", "CRYPTO_SIGNING_ENABLED": "true"}, "CRYPTO_SIGNING_ENABLED"},
		{map[string]string{"KMS_PROVIDER": "cryptosvc", "CRYPTO_SERVICE_ADDRESS": "x:1", "CRYPTO_SIGNING_ENABLED": "false"}, "CRYPTO_SIGNING_ENABLED"},
		{map[string]string{"CRYPTO_KEY_NAMESPACE": "Bad/NS"}, "CRYPTO_KEY_NAMESPACE"},
		{map[string]string{"CRYPTO_SERVICE_CERT_FILE": "c.pem"}, "CRYPTO_SERVICE_CERT_FILE"},
		{map[string]string{"CRYPTO_SERVICE_API_KEY_FILE": filepath.Join(dir, "none")}, "CRYPTO_SERVICE_API_KEY_FILE"},
		{map[string]string{"KMS_PROVIDER": "cryptosvc", "CRYPTO_SERVICE_ADDRESS": "x:1", "CRYPTO_SIGNING_KEY": "a/0"}, "CRYPTO_SIGNING_KEY"},
		{map[string]string{"KMS_PROVIDER": "cryptosvc", "CRYPTO_SERVICE_ADDRESS": "x:1", "CRYPTO_SIGNING_KEY": "a/b/1"}, "CRYPTO_SIGNING_KEY"},
		{map[string]string{"KMS_PROVIDER": "cryptosvc", "CRYPTO_SERVICE_ADDRESS": "x:1", "CRYPTO_SIGNING_KEY": "-a"}, "CRYPTO_SIGNING_KEY"},
		{map[string]string{"KMS_PROVIDER": "aws", "CRYPTO_SIGNING_KEY": "token-signing"}, "CRYPTO_SIGNING_KEY"},
	} {
		_, err := ConfigFromEnv(env(tc.vars))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error naming %s", tc.vars, err, tc.want)
		}
	}
}
