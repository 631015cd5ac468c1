package pkcs11

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// Config selects a token and says how keys are made on it. cmd/tokend
// fills it from its settings; the PIN comes from an environment variable
// or from a file read with PINFromFile.
type Config struct {
	// Module is the path of the vendor's PKCS#11 library, for example
	// /usr/lib/softhsm/libsofthsm2.so. Required.
	Module string
	// TokenLabel selects the token by its label. Required.
	TokenLabel string
	// PIN is the token's user PIN. Required. String, GoString and
	// LogValue print Config with the PIN redacted, and no error of this
	// package contains it.
	PIN string
	// LabelPrefix starts the CKA_LABEL of every key object the backend
	// makes; the reconciler touches only objects whose label has it.
	// Deployments that share a token need different prefixes. Default
	// DefaultLabelPrefix.
	LabelPrefix string
	// RSABits is the modulus size of RS256 and PS256 keys: 2048 or 3072.
	// Default 2048.
	RSABits int
	// MaxSessions bounds the sessions opened on the token (signing uses
	// one each at a time). Default 16.
	MaxSessions int
	// SessionWait bounds the wait for a free session when all are busy;
	// Sign then fails. Default 5 s.
	SessionWait time.Duration
	// Rand is the source of the key objects' CKA_ID values (the keys
	// themselves are generated inside the HSM). Default crypto/rand.
	Rand io.Reader
}

// DefaultLabelPrefix is the default Config.LabelPrefix.
const DefaultLabelPrefix = "tokenservice-signing/"

func (c Config) withDefaults() (Config, error) {
	if c.Module == "" || c.TokenLabel == "" {
		return c, fmt.Errorf("%w: the module path and the token label are required", ErrConfig)
	}
	if c.PIN == "" {
		return c, fmt.Errorf("%w: the PIN is empty", ErrConfig)
	}
	if c.LabelPrefix == "" {
		c.LabelPrefix = DefaultLabelPrefix
	}
	switch c.RSABits {
	case 0:
		c.RSABits = 2048
	case 2048, 3072:
	default:
		return c, fmt.Errorf("%w: RSA keys of %d bits (want 2048 or 3072)", ErrConfig, c.RSABits)
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = 16
	}
	if c.MaxSessions < 2 {
		// crypto11 keeps one session open to hold the login.
		return c, fmt.Errorf("%w: MaxSessions %d (want at least 2)", ErrConfig, c.MaxSessions)
	}
	if c.SessionWait <= 0 {
		c.SessionWait = 5 * time.Second
	}
	return c, nil
}

const redacted = "[redacted]"

// String prints c with the PIN redacted.
func (c Config) String() string {
	c.PIN, c.Rand = redacted, nil
	type plain Config // no String method: no recursion
	return fmt.Sprintf("%+v", plain(c))
}

// GoString prints c with the PIN redacted, for %#v.
func (c Config) GoString() string { return c.String() }

// LogValue logs c with the PIN redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("module", c.Module), slog.String("token", c.TokenLabel),
		slog.String("pin", redacted), slog.String("label_prefix", c.LabelPrefix), slog.Int("rsa_bits", c.RSABits))
}

// PINFromFile reads a PIN from a file (a mounted secret): its content
// without a final line ending. An empty PIN is an error; errors name the
// file, never its content.
func PINFromFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("pkcs11: read PIN file: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", fmt.Errorf("%w: PIN file %s is empty", ErrConfig, path)
	}
	return string(b), nil
}
