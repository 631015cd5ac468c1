// Package app assembles cryptod, the reference crypto service: it reads
// the configuration, opens the PKCS#11 token, and serves crypto.v1 over
// TLS to the callers its policy names. It is the only package of cryptod
// that reads the environment; tests drive it in process.
package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/auth-platform/tokenservice/signing/pkcs11"
)

// Config is the whole configuration of cryptod. Variables documents the
// environment variable and default of every field.
type Config struct {
	// Listen is the host:port of the TLS listener.
	Listen string
	// TLSCertFile and TLSKeyFile are the server's certificate chain and
	// key (PEM), reloaded when the files change.
	TLSCertFile, TLSKeyFile string
	// ClientCAFile, if set, verifies client certificates (mTLS).
	ClientCAFile string
	// PolicyFile names the callers and their namespaces.
	PolicyFile string
	// PKCS11 opens the token; its PIN is never logged.
	PKCS11 pkcs11.Config
	// ShutdownTimeout bounds the wait for calls in flight on Close.
	ShutdownTimeout time.Duration
	LogLevel        slog.Level
	LogFormat       string
}

// DefaultLabelPrefix starts the CKA_LABEL of cryptod's key objects.
const DefaultLabelPrefix = "cryptod/"

// Variables lists every environment variable cryptod reads, with its
// default, in the order of the README.
var Variables = []struct{ Name, Default, Meaning string }{
	{"CRYPTOD_LISTEN", "0.0.0.0:8443", "host:port of the TLS listener (Connect, gRPC and gRPC-Web over HTTP/2)"},
	{"CRYPTOD_TLS_CERT_FILE", "", "server certificate chain (PEM); required; reloaded when it changes"},
	{"CRYPTOD_TLS_KEY_FILE", "", "server private key (PEM); required"},
	{"CRYPTOD_TLS_CLIENT_CA_FILE", "", "CA bundle (PEM) that verifies client certificates: callers authenticate with mTLS (required at the handshake unless the policy lists API keys)"},
	{"CRYPTOD_POLICY_FILE", "", "YAML policy: each caller's mTLS identities or API-key hashes and its namespaces; required; reloaded when it changes"},
	{"PKCS11_MODULE", "", "path of the HSM's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so; required"},
	{"PKCS11_TOKEN_LABEL", "", "label of the token that holds the keys; required"},
	{"PKCS11_PIN", "", "the token's user PIN (or PKCS11_PIN_FILE); never logged"},
	{"PKCS11_PIN_FILE", "", "file holding the user PIN (a mounted secret); wins over PKCS11_PIN"},
	{"PKCS11_LABEL_PREFIX", DefaultLabelPrefix, "start of the CKA_LABEL of every key object cryptod makes; deployments sharing a token need different ones"},
	{"SHUTDOWN_TIMEOUT", "30", "how long SIGTERM waits for calls in flight (seconds)"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"LOG_FORMAT", "json", "json or text"},
}

// ConfigFromEnv reads the configuration through getenv (os.Getenv). An
// invalid value is an error that names the variable; the PIN appears in
// none.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var errs []error
	fail := func(name, msg string) { errs = append(errs, fmt.Errorf("%s: %s", name, msg)) }
	str := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	c := Config{
		Listen:       str("CRYPTOD_LISTEN", "0.0.0.0:8443"),
		TLSCertFile:  getenv("CRYPTOD_TLS_CERT_FILE"),
		TLSKeyFile:   getenv("CRYPTOD_TLS_KEY_FILE"),
		ClientCAFile: getenv("CRYPTOD_TLS_CLIENT_CA_FILE"),
		PolicyFile:   getenv("CRYPTOD_POLICY_FILE"),
		LogFormat:    str("LOG_FORMAT", "json"),
		PKCS11: pkcs11.Config{
			Module: getenv("PKCS11_MODULE"), TokenLabel: getenv("PKCS11_TOKEN_LABEL"),
			LabelPrefix: str("PKCS11_LABEL_PREFIX", DefaultLabelPrefix),
		},
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		fail("CRYPTOD_LISTEN", "must be host:port")
	}
	for name, v := range map[string]string{"CRYPTOD_TLS_CERT_FILE": c.TLSCertFile, "CRYPTOD_TLS_KEY_FILE": c.TLSKeyFile,
		"CRYPTOD_POLICY_FILE": c.PolicyFile, "PKCS11_MODULE": c.PKCS11.Module, "PKCS11_TOKEN_LABEL": c.PKCS11.TokenLabel} {
		if v == "" {
			fail(name, "is required")
		}
	}
	pin, err := PIN(getenv)
	if err != nil {
		errs = append(errs, err)
	}
	c.PKCS11.PIN = pin
	v := str("SHUTDOWN_TIMEOUT", "30")
	d, err := time.ParseDuration(v)
	if n, nerr := strconv.Atoi(v); nerr == nil {
		d, err = time.Duration(n)*time.Second, nil
	}
	if err != nil || d <= 0 {
		fail("SHUTDOWN_TIMEOUT", "must be seconds or a duration such as 30s")
	}
	c.ShutdownTimeout = d
	switch strings.ToLower(str("LOG_LEVEL", "info")) {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info":
		c.LogLevel = slog.LevelInfo
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		fail("LOG_LEVEL", "must be debug, info, warn or error")
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		fail("LOG_FORMAT", "must be json or text")
	}
	return c, errors.Join(errs...)
}

// PIN returns the PKCS#11 user PIN from PKCS11_PIN_FILE, or else
// PKCS11_PIN. Its errors name the variable, never the PIN.
func PIN(getenv func(string) string) (string, error) {
	if f := getenv("PKCS11_PIN_FILE"); f != "" {
		pin, err := pkcs11.PINFromFile(f)
		if err != nil {
			return "", fmt.Errorf("PKCS11_PIN_FILE: %w", err)
		}
		return pin, nil
	}
	if pin := getenv("PKCS11_PIN"); pin != "" {
		return pin, nil
	}
	return "", errors.New("PKCS11_PIN or PKCS11_PIN_FILE: is required")
}
