package app

import (
	"os"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigDefaults(t *testing.T) {
	c, err := ConfigFromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Host != "0.0.0.0" || c.Port != 50051 || c.Issuer != "auth-platform" || c.Algorithm != "RS256" ||
		c.AccessTTL != 900*time.Second || c.RefreshTTL != 604800*time.Second || c.KMSProvider != "local" ||
		c.NATSListen != "127.0.0.1:4222" || c.NATSReplicas != 1 || c.NATSSyncAlways || c.NATSSync != 2*time.Minute ||
		c.SigningOpenSSL != "auto" {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = ConfigFromEnv(env(map[string]string{"NATS_URL": "nats://127.0.0.1:4222", "KMS_PROVIDER": "mock", "NATS_SYNC": "always", "ACCESS_TOKEN_TTL": "5m"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.NATSReplicas != 3 || c.KMSProvider != "local" || !c.NATSSyncAlways || c.AccessTTL != 5*time.Minute {
		t.Fatalf("external: %+v", c)
	}
}

// TestConfigErrorsNameTheVariable: every invalid value stops start-up with
// a message that names its variable.
func TestConfigErrorsNameTheVariable(t *testing.T) {
	for name, value := range map[string]string{
		"PORT":                "http",
		"JWT_ALGORITHM":       "HS256",
		"ACCESS_TOKEN_TTL":    "-5",
		"REFRESH_TOKEN_TTL":   "soon",
		"REFRESH_REUSE_GRACE": "9999999",
		"KMS_PROVIDER":        "vault",
		"SIGNING_OPENSSL":     "yes",
		"ENCRYPTION_KEY":      "c2hvcnQ=",
		"NATS_SYNC":           "sometimes",
		"NATS_REPLICAS":       "3",
		"NATS_LISTEN":         "4222",
		"JWKS_KEY_RETENTION":  "60",
		"MAX_REQUEST_BYTES":   "1",
		"LOG_LEVEL":           "loud",
		"LOG_FORMAT":          "xml",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ConfigFromEnv(env(map[string]string{name: value}))
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("%s=%q: got %v, want an error naming %s", name, value, err, name)
			}
		})
	}
}

// TestAnonymousAppendEscapeHatch: NATS_INSECURE_ALLOW_ANONYMOUS_APPEND is
// accepted only for a NATS_URL on loopback; the embedded server never lets
// anonymous clients append, so it has no use there.
func TestAnonymousAppendEscapeHatch(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"nats://127.0.0.1:4222", true},
		{"nats://[::1]:4222", true},
		{"nats://10.0.0.5:4222", false},
		{"nats://nats.example.com:4222", false},
		{"", false},
	} {
		_, err := ConfigFromEnv(env(map[string]string{"NATS_URL": tc.url, "NATS_REPLICAS": "1", "NATS_INSECURE_ALLOW_ANONYMOUS_APPEND": "true"}))
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "NATS_INSECURE_ALLOW_ANONYMOUS_APPEND")) {
			t.Errorf("NATS_URL=%q: %v, want accepted %v", tc.url, err, tc.ok)
		}
	}
}

// TestReadmeListsEveryVariable keeps the README's configuration table
// complete.
func TestReadmeListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range Variables {
		if !strings.Contains(string(readme), "`"+v.Name+"`") {
			t.Errorf("README.md does not document %s", v.Name)
		}
	}
}

// TestTraceSampling: 10% of traces by default; the ratio can be changed;
// a standard OTEL_TRACES_SAMPLER hands the choice to the SDK.
func TestTraceSampling(t *testing.T) {
	for _, tc := range []struct {
		vars map[string]string
		want float64
	}{
		{nil, 0.1},
		{map[string]string{"OTEL_TRACES_SAMPLER_ARG": "1"}, 1},
		{map[string]string{"OTEL_TRACES_SAMPLER": "always_on"}, 0},
	} {
		c, err := ConfigFromEnv(env(tc.vars))
		if err != nil || c.SampleRatio != tc.want {
			t.Fatalf("%v: ratio %v (%v), want %v", tc.vars, c.SampleRatio, err, tc.want)
		}
	}
	if _, err := ConfigFromEnv(env(map[string]string{"OTEL_TRACES_SAMPLER_ARG": "2"})); err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER_ARG") {
		t.Fatalf("ratio 2: %v", err)
	}
}
