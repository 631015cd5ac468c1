package pkcs11_test

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/keyring/keyringtest"
	"github.com/auth-platform/tokenservice/signing/pkcs11"
	"github.com/auth-platform/tokenservice/signing/pkcs11/hsmtest"
	"github.com/auth-platform/tokenservice/signing/signingtest"
)

var _ keyring.Backend = (*pkcs11.Backend)(nil)

func open(t testing.TB, cfg pkcs11.Config) *pkcs11.Backend {
	t.Helper()
	b, err := pkcs11.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// contract runs the signing contract with keys generated on a SoftHSM2
// token by Create and opened again by Open, as the keyring does.
func contract(t *testing.T, algs []signing.Algorithm, rsaBits int) {
	tok := hsmtest.New(t)
	cfg := tok.Config
	cfg.RSABits = rsaBits
	b := open(t, cfg)
	signingtest.Run(t, algs, func(t *testing.T, alg signing.Algorithm) (signing.Signer, signing.JWK) {
		ctx := context.Background()
		key, err := b.Create(ctx, alg, "contract-"+string(alg))
		if err != nil {
			t.Fatal(err)
		}
		s, err := b.Open(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return s, key.JWK
	})
}

// TestBackendContract runs the keyring's backend contract (and with it
// the signing contract for every algorithm) against a SoftHSM2 token;
// each instance opens the token on its own. After the keyring finished
// an intent a crash interrupted, the reconciler, fed from the log, keeps
// every key the log records, the adopted one included (the suite's other
// keys on the token are not in that log: it may delete them).
func TestBackendContract(t *testing.T) {
	tok := hsmtest.New(t)
	keyringtest.Run(t, func(t *testing.T) keyring.Backend { return open(t, tok.Config) }, keyringtest.Options{
		Algorithms: pkcs11.Algorithms,
		Keys:       func(t *testing.T) int { return tok.Objects(t) },
		Recovered: func(t *testing.T, env *issuertest.Env, b keyring.Backend) {
			ctx := context.Background()
			if _, err := b.(*pkcs11.Backend).Reconcile(ctx, func(context.Context) (pkcs11.References, error) {
				env.CaughtUp(t)
				return references(env), nil
			}); err != nil {
				t.Fatal(err)
			}
			keys, _ := env.Set.Keys()
			for _, k := range keys {
				if k.Backend != pkcs11.BackendName {
					continue
				}
				key := signing.StoredKey{ID: k.ID, Algorithm: k.Algorithm, JWK: k.JWK, Ref: k.Ref}
				if _, err := b.Open(ctx, key); err != nil {
					t.Fatalf("the reconciler deleted key %s (intent %q) the log records: %v", k.ID, k.IntentID, err)
				}
			}
		},
	})
}

func TestContractRSA3072(t *testing.T) {
	contract(t, []signing.Algorithm{signing.RS256, signing.PS256}, 3072)
}

// TestKeys: the key types the algorithms ask for, made inside the token.
func TestKeys(t *testing.T) {
	tok := hsmtest.New(t)
	cfg := tok.Config
	cfg.RSABits = 3072
	b := open(t, cfg)
	ctx := context.Background()
	tests := []struct {
		alg      signing.Algorithm
		kty, crv string
		rsaBits  int
	}{
		{signing.RS256, "RSA", "", 3072},
		{signing.PS256, "RSA", "", 3072},
		{signing.ES256, "EC", "P-256", 0},
		{signing.ES384, "EC", "P-384", 0},
	}
	for _, tc := range tests {
		key, err := b.Create(ctx, tc.alg, "keys-"+string(tc.alg))
		if err != nil {
			t.Fatal(err)
		}
		j := key.JWK
		if j.Kty != tc.kty || j.Crv != tc.crv || key.Sealed != nil || key.Ref == "" || key.ID != j.Thumbprint() {
			t.Fatalf("%s: %+v", tc.alg, key)
		}
		pub, err := j.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if k, ok := pub.(*rsa.PublicKey); ok && k.N.BitLen() != tc.rsaBits {
			t.Fatalf("%s: RSA key of %d bits, want %d", tc.alg, k.N.BitLen(), tc.rsaBits)
		}
	}
	if _, err := b.Create(ctx, signing.EdDSA, "keys-eddsa"); !errors.Is(err, signing.ErrUnsupportedAlgorithm) {
		t.Fatalf("EdDSA: %v", err)
	}
}

// TestOpenRefuses: a key the token does not hold, or holds under another
// key ID, does not open.
func TestOpenRefuses(t *testing.T) {
	tok := hsmtest.New(t)
	b := open(t, tok.Config)
	ctx := context.Background()
	key, err := b.Create(ctx, signing.ES256, "open")
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.Create(ctx, signing.ES256, "open-other")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     signing.StoredKey
		wantErr error
	}{
		{"unknown CKA_ID", signing.StoredKey{ID: key.ID, Algorithm: signing.ES256, Ref: "00112233"}, pkcs11.ErrKeyNotFound},
		{"bad reference", signing.StoredKey{ID: key.ID, Algorithm: signing.ES256, Ref: "not hex"}, signing.ErrInvalidKey},
		{"another key's object", signing.StoredKey{ID: key.ID, Algorithm: signing.ES256, Ref: other.Ref}, signing.ErrInvalidKey},
		{"wrong algorithm", signing.StoredKey{ID: key.ID, Algorithm: signing.RS256, Ref: key.Ref}, signing.ErrInvalidKey},
		{"EdDSA", signing.StoredKey{ID: key.ID, Algorithm: signing.EdDSA, Ref: key.Ref}, signing.ErrUnsupportedAlgorithm},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := b.Open(ctx, tc.key); !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// TestWrongPIN: the token's refusal is a clear error that does not
// contain the PIN.
func TestWrongPIN(t *testing.T) {
	tok := hsmtest.New(t)
	cfg := tok.Config
	cfg.PIN = "98765"
	_, err := pkcs11.New(context.Background(), cfg)
	if !errors.Is(err, pkcs11.ErrPINIncorrect) {
		t.Fatalf("got %v, want ErrPINIncorrect", err)
	}
	if strings.Contains(err.Error(), cfg.PIN) || !strings.Contains(err.Error(), hsmtest.Label) {
		t.Fatalf("error %q: want the token's label and not the PIN", err)
	}
	// The right PIN still opens it: a failed login left nothing behind.
	open(t, tok.Config)
}

func TestConfig(t *testing.T) {
	module := "/nonexistent/libpkcs11.so"
	tests := []struct {
		name    string
		cfg     pkcs11.Config
		wantErr error
	}{
		{"no module", pkcs11.Config{TokenLabel: "t", PIN: "1"}, pkcs11.ErrConfig},
		{"no token", pkcs11.Config{Module: module, PIN: "1"}, pkcs11.ErrConfig},
		{"no PIN", pkcs11.Config{Module: module, TokenLabel: "t"}, pkcs11.ErrConfig},
		{"RSA 1024", pkcs11.Config{Module: module, TokenLabel: "t", PIN: "1", RSABits: 1024}, pkcs11.ErrConfig},
		{"one session", pkcs11.Config{Module: module, TokenLabel: "t", PIN: "1", MaxSessions: 1}, pkcs11.ErrConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pkcs11.New(context.Background(), tc.cfg); !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
	if _, err := pkcs11.New(context.Background(), pkcs11.Config{Module: module, TokenLabel: "t", PIN: "secret-pin"}); err == nil ||
		strings.Contains(err.Error(), "secret-pin") || !strings.Contains(err.Error(), module) {
		t.Fatalf("missing module: %v", err)
	}
}

// TestPINNeverPrinted: a Config printed or logged shows no PIN.
func TestPINNeverPrinted(t *testing.T) {
	cfg := pkcs11.Config{Module: "/m.so", TokenLabel: "t", PIN: "s3cr3t-PIN"}
	var sb strings.Builder
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("pkcs11", "config", cfg)
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg), sb.String()} {
		if strings.Contains(out, cfg.PIN) || !strings.Contains(out, "/m.so") {
			t.Fatalf("printed %q", out)
		}
	}
}

func TestPINFromFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
		wantErr             error
	}{
		{"plain", "1234", "1234", nil},
		{"newline", "1234\n", "1234", nil},
		{"CRLF", "1234\r\n", "1234", nil},
		{"inner spaces kept", " 12 34", " 12 34", nil},
		{"empty", "\n", "", pkcs11.ErrConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := pkcs11.PINFromFile(p)
			if !errors.Is(err, tc.wantErr) || got != tc.want {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
	if _, err := pkcs11.PINFromFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
