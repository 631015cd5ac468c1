package cryptosvc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/cmd/cryptod/cryptodtest"
	cryptov1 "github.com/auth-platform/tokenservice/proto/crypto/v1"
	"github.com/auth-platform/tokenservice/proto/crypto/v1/cryptov1connect"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/cryptosvc"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/keyring/keyringtest"
	"github.com/auth-platform/tokenservice/signing/seal"
	"github.com/auth-platform/tokenservice/signing/signingtest"
)

var (
	_ keyring.Backend     = cryptosvc.Backend{}
	_ keyring.Provisioner = cryptosvc.Provisioned{}
)
var _ seal.KeyWrapper = (*cryptosvc.KeyWrapper)(nil)

// client returns a client of srv authenticated with the fixture's client
// certificate.
func client(t testing.TB, f *cryptodtest.Fixture, srv *cryptodtest.Server) *cryptosvc.Client {
	t.Helper()
	c, err := cryptosvc.New(cryptosvc.Config{Address: srv.URL, TLS: f.ClientTLS(t, f.ClientCert, f.ClientKey), Namespace: cryptodtest.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBackendContract runs the keyring's backend contract (and with it
// the signing contract for every algorithm) against cmd/cryptod serving
// a SoftHSM2 token, over TLS with mTLS; each instance is a client of its
// own.
func TestBackendContract(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	keyringtest.Run(t, func(t *testing.T) keyring.Backend { return cryptosvc.Backend{Client: client(t, f, srv)} }, keyringtest.Options{
		Algorithms: cryptosvc.Algorithms,
		Keys:       func(t *testing.T) int { return f.Token.Objects(t) },
	})
}

// TestProvisionedContract runs the contract of a provisioned key
// (CRYPTO_SIGNING_KEY) against cmd/cryptod on SoftHSM2: each key is made
// by the operator with the crypto.v1 API, and followed by name, at its
// primary version.
func TestProvisionedContract(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	op := cryptov1connect.NewCryptoServiceClient(f.HTTPClient(t, f.ClientCert, f.ClientKey), srv.URL, connect.WithGRPC())
	specs := map[signing.Algorithm]cryptov1.KeySpec{signing.RS256: cryptov1.KeySpec_KEY_SPEC_RSA_2048, signing.PS256: cryptov1.KeySpec_KEY_SPEC_RSA_3072,
		signing.ES256: cryptov1.KeySpec_KEY_SPEC_EC_P256, signing.ES384: cryptov1.KeySpec_KEY_SPEC_EC_P384}
	var made atomic.Int32
	keyringtest.RunProvisioned(t, func(t *testing.T, alg signing.Algorithm) func(*testing.T) keyring.Provisioner {
		name := fmt.Sprintf("operator-%s-%d", strings.ToLower(string(alg)), made.Add(1))
		_, err := op.CreateKey(context.Background(), connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: name, Spec: specs[alg]}))
		if err != nil {
			t.Fatal(err)
		}
		return func(t *testing.T) keyring.Provisioner {
			return cryptosvc.Provisioned{Client: client(t, f, srv), Key: name}
		}
	}, keyringtest.ProvisionedOptions{Algorithms: cryptosvc.Algorithms, Keys: func(t *testing.T) int { return f.Token.Objects(t) }})
}

// TestParseKey: CRYPTO_SIGNING_KEY is name or name/version, by crypto.v1's
// rules.
func TestParseKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		name    string
		version uint32
		wantErr error
	}{
		{"token-signing", "token-signing", 0, nil},
		{"token.signing_2/7", "token.signing_2", 7, nil},
		{"", "", 0, cryptosvc.ErrConfig},
		{"-a", "", 0, cryptosvc.ErrConfig},
		{"a/0", "", 0, cryptosvc.ErrConfig},
		{"a/", "", 0, cryptosvc.ErrConfig},
		{"a/1/2", "", 0, cryptosvc.ErrConfig},
		{"a/4294967296", "", 0, cryptosvc.ErrConfig},
		{strings.Repeat("a", 129), "", 0, cryptosvc.ErrConfig},
	} {
		name, version, err := cryptosvc.ParseKey(tc.in)
		if !errors.Is(err, tc.wantErr) || name != tc.name || version != tc.version {
			t.Errorf("ParseKey(%q) = %q, %d, %v; want %q, %d, %v", tc.in, name, version, err, tc.name, tc.version, tc.wantErr)
		}
	}
}

// TestKeyName: the key of an intent is named after it, in the client's
// namespace, at its first version; once discarded, it is not found.
func TestKeyName(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	b := cryptosvc.Backend{Client: client(t, f, srv)}
	ctx := context.Background()
	key, err := b.Create(ctx, signing.ES256, "intent-1")
	if err != nil {
		t.Fatal(err)
	}
	if want := cryptodtest.Namespace + "/" + cryptosvc.KeyName("intent-1") + "/1"; key.Ref != want {
		t.Fatalf("Ref %q, want %q", key.Ref, want)
	}
	if err := b.Discard(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(ctx, key); !errors.Is(err, cryptosvc.ErrKeyNotFound) {
		t.Fatalf("a discarded key: %v", err)
	}
}

// TestContractAPIKey runs the contract for one algorithm with a caller
// that authenticates with an API key and no client certificate, and an
// RSA-3072 key.
func TestContractAPIKey(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	c, err := cryptosvc.New(cryptosvc.Config{Address: srv.URL, TLS: f.ClientTLS(t, "", ""), APIKey: cryptodtest.APIKey})
	if err != nil {
		t.Fatal(err)
	}
	b := cryptosvc.Backend{Client: c, RSABits: 3072}
	signingtest.Run(t, []signing.Algorithm{signing.PS256}, func(t *testing.T, alg signing.Algorithm) (signing.Signer, signing.JWK) {
		key, err := b.Create(context.Background(), alg, "api-key")
		if err != nil {
			t.Fatal(err)
		}
		s, err := b.Open(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		return s, key.JWK
	})
}

// TestKeysSurviveRestart: cryptod keeps no state but the token: after a
// restart on the same token a key signs as before.
func TestKeysSurviveRestart(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	b := cryptosvc.Backend{Client: client(t, f, srv)}
	ctx := context.Background()
	key, err := b.Create(ctx, signing.ES384, "restart")
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv = srv.Restart(t)
	b = cryptosvc.Backend{Client: client(t, f, srv)}
	s, err := b.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(ctx, []byte("e30.e30"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.JWK.PublicKey()
	if err := signing.Verify(signing.ES384, pub, []byte("e30.e30"), sig); err != nil {
		t.Fatal(err)
	}
}

// TestEnvelopeWithCryptod: signing/seal's envelope with the KeyWrapper of
// a real cryptod: the wrapping key is made on first use, values open on
// another Sealer (another replica) with the service, and what the local
// key sealed before still opens.
func TestEnvelopeWithCryptod(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	w := client(t, f, srv).KeyWrapper(cryptosvc.DefaultWrapKeyName, nil)
	key := bytes.Repeat([]byte{3}, 32)
	local, err := seal.New(rand.Reader, key)
	if err != nil {
		t.Fatal(err)
	}
	before, err := local.Seal([]byte("local"), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := local.WithEnvelope(seal.Envelope{Wrapper: w, Seal: true})
	if err != nil {
		t.Fatal(err)
	}
	v, err := env.Seal([]byte("private key"), []byte("kid"))
	if err != nil {
		t.Fatal(err)
	}
	if v[0] != 2 {
		t.Fatalf("sealed in format %d, want the envelope", v[0])
	}
	if n := f.Token.Objects(t); n != 1 {
		t.Fatalf("%d objects on the token, want the wrapping key", n)
	}
	replicaLocal, _ := seal.New(rand.Reader, key)
	replica, _ := replicaLocal.WithEnvelope(seal.Envelope{Wrapper: client(t, f, srv).KeyWrapper(cryptosvc.DefaultWrapKeyName, nil), Seal: true})
	if pt, err := replica.Open(v, []byte("kid")); err != nil || string(pt) != "private key" {
		t.Fatalf("open on a replica: %q, %v", pt, err)
	}
	if pt, err := replica.Open(before, []byte("k")); err != nil || string(pt) != "local" {
		t.Fatalf("open a value sealed before the envelope: %q, %v", pt, err)
	}
	// The service refuses a wrapped key under other associated data or
	// altered: the value does not open.
	v[5] ^= 1
	third, _ := replicaLocal.WithEnvelope(seal.Envelope{Wrapper: client(t, f, srv).KeyWrapper(cryptosvc.DefaultWrapKeyName, nil)})
	if _, err := third.Open(v, []byte("kid")); err == nil {
		t.Fatal("an altered wrapped data key opened")
	}
}

// TestAuthorization: the service refuses a caller without credentials,
// with a wrong API key, or with a certificate of another namespace, and
// the client's errors never contain the API key.
func TestAuthorization(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	ctx := context.Background()
	tests := []struct {
		name string
		cfg  cryptosvc.Config
		want string
	}{
		{"no credential", cryptosvc.Config{TLS: f.ClientTLS(t, "", "")}, "unauthenticated"},
		{"wrong API key", cryptosvc.Config{TLS: f.ClientTLS(t, "", ""), APIKey: "not-the-key"}, "unauthenticated"},
		{"another caller's namespace", cryptosvc.Config{TLS: f.ClientTLS(t, f.OtherCert, f.OtherKey)}, "permission_denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Address = srv.URL
			c, err := cryptosvc.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cryptosvc.Backend{Client: c}.Create(ctx, signing.ES256, "denied")
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.cfg.APIKey != "" && strings.Contains(err.Error(), tc.cfg.APIKey)) {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}
	if n := f.Token.Objects(t); n != 0 {
		t.Fatalf("%d objects made by refused callers", n)
	}
	cfg := cryptosvc.Config{Address: srv.URL, APIKey: "s3cret-api-key"}
	var sb strings.Builder
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("crypto service", "config", cfg)
	for _, out := range []string{fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg), sb.String()} {
		if strings.Contains(out, cfg.APIKey) || !strings.Contains(out, srv.URL) {
			t.Fatalf("printed %q", out)
		}
	}
}

func TestConfig(t *testing.T) {
	for _, addr := range []string{"", "http://127.0.0.1:1", "https://", "https://h:1/path"} {
		if _, err := cryptosvc.New(cryptosvc.Config{Address: addr}); !errors.Is(err, cryptosvc.ErrConfig) {
			t.Fatalf("address %q: %v", addr, err)
		}
	}
	c, err := cryptosvc.New(cryptosvc.Config{Address: "cryptod:8443"})
	if err != nil || c.Namespace() != cryptosvc.DefaultNamespace {
		t.Fatalf("host:port: %v, namespace %q", err, c.Namespace())
	}
	for _, ref := range []string{"", "a/b", "a/b/0", "a//1", "a/b/x"} {
		if _, err := cryptosvc.ParseRef(ref); !errors.Is(err, signing.ErrInvalidKey) {
			t.Fatalf("ref %q: %v", ref, err)
		}
	}
}
