package app

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/auth-platform/tokenservice/signing/seal"
)

// encryptionKey returns ENCRYPTION_KEY, or the key generated once under
// DATA_DIR (created with mode 0600 on first start).
func (m *Main) encryptionKey() ([]byte, error) {
	if m.Config.EncryptionKey != nil {
		return m.Config.EncryptionKey, nil
	}
	path := filepath.Join(m.Config.DataDir, "encryption.key")
	if b, err := os.ReadFile(path); err == nil {
		key, err := base64.StdEncoding.DecodeString(string(trimSpace(b)))
		if err != nil || len(key) != seal.KeySize {
			return nil, fmt.Errorf("%s: not the base64 of 32 bytes", path)
		}
		m.Logger.Warn("ENCRYPTION_KEY is not set: using the key generated in DATA_DIR; set ENCRYPTION_KEY in production and keep it outside the data directory", "path", path)
		return key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, seal.KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write generated encryption key: %w", err)
	}
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	m.Logger.Warn("ENCRYPTION_KEY is not set: GENERATED a new key and stored it in DATA_DIR. Anyone who reads DATA_DIR can unseal the signing keys. Set ENCRYPTION_KEY in production.", "path", path)
	return key, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
