// Package app assembles cryptod, the reference crypto service: it reads
// the configuration, opens the PKCS#11 token, and serves crypto.v1 over
// TLS to the callers its policy names. It is the only package of cryptod
// that reads the environment; tests drive it in process.
package app

import (
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
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

// Variables documents every environment variable cryptod reads, with its
// default, in the order of the README; it is rendered from the same
// declarations ConfigFromEnv parses.
var Variables = envvar.Docs(new(Config).vars())

// vars declares every variable once: name, default, parser and the
// README's words. The parsers store into c.
func (c *Config) vars() []envvar.Var {
	return []envvar.Var{
		{Name: "CRYPTOD_LISTEN", Default: "0.0.0.0:8443", Parse: hostPort(&c.Listen),
			Doc: "host:port of the TLS listener"},
		{Name: "CRYPTOD_TLS_CERT_FILE", Required: true, Parse: envvar.String(&c.TLSCertFile),
			Doc: "server certificate chain (PEM); required; reloaded when it changes"},
		{Name: "CRYPTOD_TLS_KEY_FILE", Required: true, Parse: envvar.String(&c.TLSKeyFile),
			Doc: "server private key (PEM); required"},
		{Name: "CRYPTOD_TLS_CLIENT_CA_FILE", Parse: envvar.String(&c.ClientCAFile),
			Doc: "CA bundle that verifies client certificates (mTLS)"},
		{Name: "CRYPTOD_POLICY_FILE", Required: true, Parse: envvar.String(&c.PolicyFile),
			Doc: "the caller policy above; required"},
		{Name: "PKCS11_MODULE", Required: true, Parse: envvar.String(&c.PKCS11.Module),
			Doc: "path of the HSM's PKCS#11 library; required"},
		{Name: "PKCS11_TOKEN_LABEL", Required: true, Parse: envvar.String(&c.PKCS11.TokenLabel),
			Doc: "label of the token; required"},
		{Name: "PKCS11_PIN", Parse: envvar.String(&c.PKCS11.PIN),
			Doc: "the token's user PIN (or `PKCS11_PIN_FILE`); never logged"},
		{Name: "PKCS11_PIN_FILE", Parse: pinFile(&c.PKCS11.PIN),
			Doc: "file holding the PIN; wins over `PKCS11_PIN`"},
		{Name: "PKCS11_LABEL_PREFIX", Default: DefaultLabelPrefix, Parse: envvar.String(&c.PKCS11.LabelPrefix),
			Doc: "start of the label of cryptod's key objects; deployments sharing a token need different ones"},
		{Name: "SHUTDOWN_TIMEOUT", Default: "30", Parse: envvar.Duration(&c.ShutdownTimeout, time.Nanosecond),
			Doc: "how long SIGTERM waits for calls in flight"},
		{Name: "LOG_LEVEL", Default: "info", Parse: envvar.Level(&c.LogLevel),
			Doc: "`debug`, `info`, `warn` or `error`"},
		{Name: "LOG_FORMAT", Default: "json", Parse: envvar.OneOf(&c.LogFormat, "json", "text"),
			Doc: "`json` or `text`"},
	}
}

// ConfigFromEnv reads the configuration through getenv (os.Getenv). An
// invalid value is an error that names the variable; the PIN appears in
// none.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var c Config
	errs := envvar.Load(getenv, c.vars())
	if c.PKCS11.PIN == "" {
		errs.Fail("PKCS11_PIN or PKCS11_PIN_FILE", "is required")
	}
	return c, errs.Err()
}

// hostPort accepts host:port.
func hostPort(p *string) envvar.Parser {
	return func(v string) error {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return errors.New("must be host:port")
		}
		*p = v
		return nil
	}
}

// pinFile reads the PKCS#11 user PIN from the file the value names; its
// errors never hold the PIN.
func pinFile(p *string) envvar.Parser {
	return func(v string) error {
		pin, err := pkcs11.PINFromFile(v)
		if err != nil {
			return err
		}
		*p = pin
		return nil
	}
}
