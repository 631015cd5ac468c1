package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/breaker"
	"github.com/auth-platform/tokenservice/signing/cryptosvc"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/local"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// Secret is a setting that is never printed or logged: a PIN, an API
// key.
type Secret string

// String prints a redacted secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString prints a redacted secret, for %#v.
func (s Secret) GoString() string { return s.String() }

// LogValue logs a redacted secret.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// defaultPKCS11LabelPrefix is pkcs11.DefaultLabelPrefix, repeated so that
// the configuration builds without cgo.
const defaultPKCS11LabelPrefix = "tokenservice-signing/"

// composeCrypto resolves the signing backend (KMS_PROVIDER, or
// CRYPTO_SIGNING_ENABLED=true alone) and checks that the HSM and crypto
// service settings it needs are there; vars.go parses each.
func (r *reading) composeCrypto(errs *envvar.Errors) {
	c := &r.c
	chosen := c.KMSProvider != ""
	if !chosen {
		c.KMSProvider = defaultKMSProvider
	}
	switch {
	case r.cryptoSigning == nil:
		c.CryptoSigning = c.KMSProvider == "cryptosvc"
	case *r.cryptoSigning:
		c.CryptoSigning = true
		switch {
		case !chosen:
			c.KMSProvider = "cryptosvc"
		case c.KMSProvider != "cryptosvc":
			errs.Fail("CRYPTO_SIGNING_ENABLED", "true means KMS_PROVIDER=cryptosvc, not "+c.KMSProvider)
		}
	case c.KMSProvider == "cryptosvc":
		errs.Fail("CRYPTO_SIGNING_ENABLED", "false contradicts KMS_PROVIDER=cryptosvc")
	}
	if c.CryptoServiceAddress == "" {
		if c.KMSProvider == "cryptosvc" {
			errs.Fail("CRYPTO_SERVICE_ADDRESS", "is required with KMS_PROVIDER=cryptosvc")
		}
		if c.CryptoEncryption {
			errs.Fail("CRYPTO_SERVICE_ADDRESS", "is required with CRYPTO_ENCRYPTION_ENABLED=true")
		}
	}
	if c.CryptoSigningKey != "" && c.KMSProvider != "cryptosvc" {
		errs.Fail("CRYPTO_SIGNING_KEY", "names a key of the crypto service: it needs KMS_PROVIDER=cryptosvc (or CRYPTO_SIGNING_ENABLED=true), not "+c.KMSProvider)
	}
	if (c.CryptoServiceCertFile == "") != (c.CryptoServiceKeyFile == "") {
		errs.Fail("CRYPTO_SERVICE_CERT_FILE", "and CRYPTO_SERVICE_KEY_FILE go together")
	}
	if c.KMSProvider == "pkcs11" {
		if c.PKCS11Module == "" {
			errs.Fail("PKCS11_MODULE", "is required with KMS_PROVIDER=pkcs11")
		}
		if c.PKCS11TokenLabel == "" {
			errs.Fail("PKCS11_TOKEN_LABEL", "is required with KMS_PROVIDER=pkcs11")
		}
		if c.PKCS11PIN == "" {
			errs.Fail("PKCS11_PIN", "(or PKCS11_PIN_FILE) is required with KMS_PROVIDER=pkcs11")
		}
	}
}

// readSecret reads a secret from a file (a mounted secret): its content
// without a final line ending. Errors name the file, never its content.
func readSecret(path string) (Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) == 0 {
		return "", fmt.Errorf("%s is empty", path)
	}
	return Secret(b), nil
}

// cryptoParts are what the HSM and crypto-service backends add to tokend
// and close after the group stopped their background tasks.
type cryptoParts struct {
	closers []func() error
}

// close closes the parts in reverse order.
func (c *cryptoParts) close() error {
	var errs []error
	for i := len(c.closers) - 1; i >= 0; i-- {
		errs = append(errs, c.closers[i]())
	}
	c.closers = nil
	return errors.Join(errs...)
}

// setupCrypto configures kcfg's backend for KMS_PROVIDER=pkcs11 and
// cryptosvc, behind the breaker with the crypto metrics, and returns the
// sealer: with the crypto service's envelope when CRYPTO_SERVICE_ADDRESS
// is set (sealing with it when CRYPTO_ENCRYPTION_ENABLED; otherwise only
// opening what it sealed, which the keyring moves back under
// ENCRYPTION_KEY). Background tasks run in Main's group.
func (m *Main) setupCrypto(ctx context.Context, kcfg *keyring.Config, sealer *seal.Sealer) (*seal.Sealer, error) {
	cfg := m.Config
	if err := m.useOpenSSL(); err != nil {
		return nil, err
	}
	var client *cryptosvc.Client
	if cfg.CryptoServiceAddress != "" {
		ccfg, certs, err := cryptoServiceConfig(cfg, m.Logger)
		if err != nil {
			return nil, err
		}
		if certs != nil {
			m.group.Go("crypto service certificate watcher", watchEvery(certs.Watch, time.Second), nil)
		}
		if client, err = cryptosvc.New(ccfg); err != nil {
			return nil, fmt.Errorf("CRYPTO_SERVICE_ADDRESS: %w", err)
		}
		m.Logger.Info("crypto service", "config", ccfg, "signing", cfg.CryptoSigning, "encryption", cfg.CryptoEncryption)
		wrapper := client.KeyWrapper(cryptosvc.DefaultWrapKeyName, breaker.NewBreaker(
			m.breakerConfig("crypto-service-envelope", rpc.BreakerEnvelope, false)))
		sealer, err = sealer.WithEnvelope(seal.Envelope{Wrapper: wrapper, Seal: cfg.CryptoEncryption,
			Fallback: cfg.CryptoFallback, OnFallback: m.Metrics.FallbackSealed})
		if err != nil {
			return nil, err
		}
		if err := sealer.Prepare(ctx); err != nil {
			m.Logger.Warn("envelope encryption: the crypto service wraps no data key yet; sealing under ENCRYPTION_KEY until it does", "error", err)
		}
	}
	switch cfg.KMSProvider {
	case "cryptosvc":
		kcfg.Backend = cryptosvc.Backend{Client: client}
		if cfg.CryptoSigningKey != "" {
			kcfg.Backend = cryptosvc.Provisioned{Client: client, Key: cfg.CryptoSigningKey, Version: cfg.CryptoSigningKeyVersion}
		}
	case "pkcs11":
		b, err := m.startPKCS11(ctx)
		if err != nil {
			return nil, err
		}
		kcfg.Backend = b
	default:
		return sealer, nil
	}
	kcfg.Breaker = m.breakerConfig("", rpc.BreakerSigning, true)
	return sealer, nil
}

// useOpenSSL makes local RSA keys sign with the system's OpenSSL, as
// SIGNING_OPENSSL says. It runs before any key is opened.
func (m *Main) useOpenSSL() error {
	mode := m.Config.SigningOpenSSL
	if mode == "off" {
		m.Logger.Info("local RSA keys sign with Go's crypto (SIGNING_OPENSSL=off)")
		return nil
	}
	lib, err := local.LoadOpenSSL()
	switch {
	case err == nil:
		m.Logger.Info("local RSA keys sign with OpenSSL", "version", lib.Version, "fips_provider", lib.FIPS)
	case mode == "on":
		return fmt.Errorf("SIGNING_OPENSSL=on: %w", err)
	default:
		m.Logger.Info("local RSA keys sign with Go's crypto: OpenSSL did not load", "error", err)
	}
	return nil
}

// breakerConfig is the circuit breaker of a remote backend's calls, from
// CRYPTO_TIMEOUT and CRYPTO_BREAKER_*, reported under label
// (rpc.BreakerSigning, rpc.BreakerEnvelope); limited adds
// CRYPTO_RATE_LIMIT (the signing calls, which the fallback key takes over;
// not the envelope's).
func (m *Main) breakerConfig(name, label string, limited bool) breaker.Config {
	cfg := m.Config
	b := breaker.Config{Name: name, Timeout: cfg.CryptoTimeout, Observer: m.Metrics.BreakerObserver(label),
		Failures: uint32(cfg.CryptoBreakerFailures), OpenFor: cfg.CryptoBreakerOpen, HalfOpenProbes: uint32(cfg.CryptoBreakerProbes)}
	if limited {
		b.RateLimit = cfg.CryptoRateLimit
	}
	return b
}

// cryptoServiceConfig builds the client configuration: the CA that
// verifies the service, tokend's client certificate (reloaded when its
// files change, by the returned reloader's Watch), its API key.
func cryptoServiceConfig(cfg Config, log *slog.Logger) (cryptosvc.Config, *auth.CertReloader, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CryptoServiceCAFile != "" {
		pool, err := auth.LoadCertPool(cfg.CryptoServiceCAFile)
		if err != nil {
			return cryptosvc.Config{}, nil, fmt.Errorf("CRYPTO_SERVICE_CA_FILE: %w", err)
		}
		tc.RootCAs = pool
	}
	var certs *auth.CertReloader
	if cfg.CryptoServiceCertFile != "" {
		var err error
		if certs, err = auth.NewCertReloader(cfg.CryptoServiceCertFile, cfg.CryptoServiceKeyFile, log); err != nil {
			return cryptosvc.Config{}, nil, fmt.Errorf("CRYPTO_SERVICE_CERT_FILE: %w", err)
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return certs.GetCertificate(nil) }
	}
	return cryptosvc.Config{Address: cfg.CryptoServiceAddress, TLS: tc, APIKey: string(cfg.CryptoServiceAPIKey),
		Namespace: cfg.CryptoKeyNamespace, Backoff: signing.Backoff{Timeout: cfg.CryptoTimeout}}, certs, nil
}
