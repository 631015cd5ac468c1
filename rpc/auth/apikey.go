package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// APIKeyPrefix starts every API key, so that secret scanners and people
// recognise one.
const APIKeyPrefix = "tdk_"

// apiKeyBytes is the entropy of a key: 256 bits.
const apiKeyBytes = 32

// maxAPIKeyLen bounds what is hashed from an Authorization header.
const maxAPIKeyLen = 256

// GenerateAPIKey returns a new API key, to hand to the caller once, and the
// policy entry that admits it (name and roles as given, no client
// restriction, no expiry). The key is "tdk_" and 32 bytes from random in
// base64url; the entry holds only its SHA-256. It returns an error if name
// or a role is invalid or random fails.
func GenerateAPIKey(random io.Reader, name string, roles ...Role) (key string, entry APIKeyEntry, err error) {
	if err := validName(name); err != nil {
		return "", APIKeyEntry{}, fmt.Errorf("auth: API key name %v", err)
	}
	if _, err := entryIdentity(KindAPIKey, name, name, roles, nil, nil, nil, nil); err != nil {
		return "", APIKeyEntry{}, fmt.Errorf("auth: API key: %w", err)
	}
	b := make([]byte, apiKeyBytes)
	if _, err := io.ReadFull(random, b); err != nil {
		return "", APIKeyEntry{}, fmt.Errorf("auth: API key: %w", err)
	}
	key = APIKeyPrefix + base64.RawURLEncoding.EncodeToString(b)
	return key, APIKeyEntry{Name: name, SHA256: HashAPIKey(key), Roles: roles}, nil
}

// HashAPIKey returns the hex SHA-256 of key, as the policy file holds it.
//
// A fast hash is enough: the keys are 256 random bits, so the file's
// hashes cannot be reversed by guessing, however many guesses a second an
// attacker makes; a slow password hash (bcrypt, Argon2) protects
// low-entropy secrets and would only add milliseconds to every call.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// Line returns the entry as one line to append under api_keys: in the
// policy file ("- {...}", JSON being YAML).
func (e APIKeyEntry) Line() string {
	b, _ := json.Marshal(e) // strings and numbers only: cannot fail
	return "- " + string(b)
}

// bearer returns the credential of an Authorization header value, or
// ok false if it is not a bearer credential of sane length.
func bearer(h string) (string, bool) {
	scheme, cred, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	if cred == "" || len(cred) > maxAPIKeyLen {
		return "", false
	}
	return cred, true
}
