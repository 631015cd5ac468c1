package app

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestSpecificationConfiguration: a deployment that follows the
// specification's configuration table, value for value, either starts or
// is refused with a message that names the variable and what to set.
func TestSpecificationConfiguration(t *testing.T) {
	spec := func() map[string]string {
		return map[string]string{
			"HOST": "127.0.0.1", "PORT": "0", "JWT_ISSUER": "auth-platform", "JWT_ALGORITHM": "RS256",
			"ACCESS_TOKEN_TTL": "900", "REFRESH_TOKEN_TTL": "604800", "KMS_PROVIDER": "mock", "KMS_KEY_ID": "default-key",
			"CRYPTO_SERVICE_ADDRESS": "http://localhost:50051", "CRYPTO_SIGNING_ENABLED": "true", "CRYPTO_ENCRYPTION_ENABLED": "true",
			"CRYPTO_FALLBACK_ENABLED": "true", "CRYPTO_KEY_NAMESPACE": "token", "CRYPTO_RATE_LIMIT": "1000",
			"CACHE_SERVICE_ADDRESS": "http://localhost:50051", "LOGGING_SERVICE_ADDRESS": "http://localhost:5001",
			"DPOP_CLOCK_SKEW": "60", "DPOP_JTI_TTL": "300", "JWKS_KEY_RETENTION": "86400",
			// Not in the specification's table: a test's own data folder
			// and port (HOST is loopback, so no caller policy is needed).
			"DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		}
	}
	start := func(vars map[string]string) (*Main, error) {
		cfg, err := ConfigFromEnv(func(k string) string { return vars[k] })
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return Start(ctx, cfg, slog.New(slog.DiscardHandler))
	}
	refused := func(what string, err error, words ...string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: started", what)
		}
		for _, w := range words {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: %q does not say %q", what, err, w)
			}
		}
	}

	// The table as it is: signing through the crypto service with the
	// mock provider; the refusal names both and what to set.
	_, err := start(spec())
	refused("the specification's table", err, "CRYPTO_SIGNING_ENABLED", "KMS_PROVIDER=cryptosvc")

	// As told: the crypto service at the specification's plain-HTTP
	// default address, which is refused for its own reason.
	vars := spec()
	vars["KMS_PROVIDER"] = "cryptosvc"
	_, err = start(vars)
	refused("the crypto service over http", err, "CRYPTO_SERVICE_ADDRESS", "want https://host:port")

	// With the crypto service's switches off but its address still set,
	// the address is refused all the same: values sealed through the
	// service's envelope need it to open.
	vars = spec()
	vars["CRYPTO_SIGNING_ENABLED"], vars["CRYPTO_ENCRYPTION_ENABLED"] = "false", "false"
	_, err = start(vars)
	refused("an unused crypto service over http", err, "CRYPTO_SERVICE_ADDRESS", "want https://host:port")

	// Without a crypto service, the table starts: the mock provider signs
	// with a local key, the cache and logging addresses are accepted (the
	// logging one receives nothing here, and must not hold the start).
	delete(vars, "CRYPTO_SERVICE_ADDRESS")
	m, err := start(vars)
	if err != nil {
		t.Fatalf("the table without a crypto service: %v", err)
	}
	defer m.Close(context.Background())
	if _, ok := m.Set.ActiveKey(); !ok {
		t.Fatal("no signing key")
	}
}
