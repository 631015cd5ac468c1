package app_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/cmd/cryptod/app"
	"github.com/auth-platform/tokenservice/cmd/cryptod/cryptodtest"
	cryptov1 "github.com/auth-platform/tokenservice/proto/crypto/v1"
	"github.com/auth-platform/tokenservice/proto/crypto/v1/cryptov1connect"
	"github.com/auth-platform/tokenservice/rpc/auth/authtest"
)

func api(t *testing.T, f *cryptodtest.Fixture, srv *cryptodtest.Server, cert, key string, opts ...connect.ClientOption) cryptov1connect.CryptoServiceClient {
	t.Helper()
	return cryptov1connect.NewCryptoServiceClient(f.HTTPClient(t, cert, key), srv.URL, append([]connect.ClientOption{connect.WithGRPC()}, opts...)...)
}

func ref(name string, v uint32) *cryptov1.KeyRef {
	return &cryptov1.KeyRef{Namespace: cryptodtest.Namespace, Name: name, Version: v}
}

// TestService exercises every call of crypto.v1 against cryptod on
// SoftHSM2 and the code of each refusal.
func TestService(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	c := api(t, f, srv, f.ClientCert, f.ClientKey)
	ctx := context.Background()

	created, err := c.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: "sig", Spec: cryptov1.KeySpec_KEY_SPEC_EC_P256}))
	if err != nil || !created.Msg.GetCreated() || created.Msg.GetKey().GetVersion() != 1 {
		t.Fatalf("CreateKey: %v, %v", created, err)
	}
	rotated, err := c.RotateKey(ctx, connect.NewRequest(&cryptov1.RotateKeyRequest{Namespace: cryptodtest.Namespace, Name: "sig"}))
	if err != nil || rotated.Msg.GetKey().GetVersion() != 2 || rotated.Msg.GetSpec() != cryptov1.KeySpec_KEY_SPEC_EC_P256 {
		t.Fatalf("RotateKey: %v, %v", rotated, err)
	}
	again, err := c.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: "sig", Spec: cryptov1.KeySpec_KEY_SPEC_EC_P256}))
	if err != nil || again.Msg.GetCreated() || again.Msg.GetKey().GetVersion() != 2 {
		t.Fatalf("CreateKey again: %v, %v", again, err)
	}
	digest := sha256.Sum256([]byte("message"))
	for _, v := range []uint32{0, 1, 2} {
		pub, err := c.GetPublicKey(ctx, connect.NewRequest(&cryptov1.GetPublicKeyRequest{Key: ref("sig", v)}))
		if err != nil {
			t.Fatal(err)
		}
		sig, err := c.Sign(ctx, connect.NewRequest(&cryptov1.SignRequest{Key: ref("sig", v),
			Algorithm: cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_P256_SHA256, Digest: digest[:]}))
		if err != nil {
			t.Fatal(err)
		}
		want := max(v, 1)
		if v == 0 {
			want = 2
		}
		if pub.Msg.GetKey().GetVersion() != want || sig.Msg.GetKey().GetVersion() != want {
			t.Fatalf("version %d: public key of %d, signed by %d, want %d", v, pub.Msg.GetKey().GetVersion(), sig.Msg.GetKey().GetVersion(), want)
		}
		k, err := x509.ParsePKIXPublicKey(pub.Msg.GetPublicKey())
		if err != nil || !ecdsa.VerifyASN1(k.(*ecdsa.PublicKey), digest[:], sig.Msg.GetSignature()) {
			t.Fatalf("version %d: the signature does not verify (%v)", v, err)
		}
	}

	if _, err := c.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: "wrap", Spec: cryptov1.KeySpec_KEY_SPEC_AES_256})); err != nil {
		t.Fatal(err)
	}
	enc1, err := c.Encrypt(ctx, connect.NewRequest(&cryptov1.EncryptRequest{Key: ref("wrap", 0), Plaintext: []byte("data key 1"), AssociatedData: []byte("ad")}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RotateKey(ctx, connect.NewRequest(&cryptov1.RotateKeyRequest{Namespace: cryptodtest.Namespace, Name: "wrap"})); err != nil {
		t.Fatal(err)
	}
	enc2, err := c.Encrypt(ctx, connect.NewRequest(&cryptov1.EncryptRequest{Key: ref("wrap", 0), Plaintext: []byte("data key 2"), AssociatedData: []byte("ad")}))
	if err != nil || enc2.Msg.GetKey().GetVersion() != 2 {
		t.Fatalf("Encrypt after rotation: %v, %v", enc2, err)
	}
	for i, enc := range []*connect.Response[cryptov1.EncryptResponse]{enc1, enc2} {
		dec, err := c.Decrypt(ctx, connect.NewRequest(&cryptov1.DecryptRequest{Key: ref("wrap", 0), Ciphertext: enc.Msg.GetCiphertext(), AssociatedData: []byte("ad")}))
		if err != nil || string(dec.Msg.GetPlaintext()) != "data key "+string(rune('1'+i)) || dec.Msg.GetKey().GetVersion() != uint32(i+1) {
			t.Fatalf("Decrypt %d: %v, %v", i+1, dec, err)
		}
	}

	altered := bytes.Clone(enc1.Msg.GetCiphertext())
	altered[len(altered)-1] ^= 1
	refused := []struct {
		name string
		call func() error
		want connect.Code
	}{
		{"create: bad name", func() error {
			_, err := c.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: "a/b", Spec: cryptov1.KeySpec_KEY_SPEC_EC_P256}))
			return err
		}, connect.CodeInvalidArgument},
		{"create: no spec", func() error {
			_, err := c.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: "x"}))
			return err
		}, connect.CodeInvalidArgument},
		{"create: another spec", func() error {
			_, err := c.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: "sig", Spec: cryptov1.KeySpec_KEY_SPEC_RSA_2048}))
			return err
		}, connect.CodeAlreadyExists},
		{"sign: unknown key", func() error {
			_, err := c.Sign(ctx, connect.NewRequest(&cryptov1.SignRequest{Key: ref("none", 0), Algorithm: cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_P256_SHA256, Digest: digest[:]}))
			return err
		}, connect.CodeNotFound},
		{"sign: unknown version", func() error {
			_, err := c.Sign(ctx, connect.NewRequest(&cryptov1.SignRequest{Key: ref("sig", 9), Algorithm: cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_P256_SHA256, Digest: digest[:]}))
			return err
		}, connect.CodeNotFound},
		{"sign: algorithm of another key type", func() error {
			_, err := c.Sign(ctx, connect.NewRequest(&cryptov1.SignRequest{Key: ref("sig", 0), Algorithm: cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_RSA_PSS_SHA256, Digest: digest[:]}))
			return err
		}, connect.CodeInvalidArgument},
		{"sign: short digest", func() error {
			_, err := c.Sign(ctx, connect.NewRequest(&cryptov1.SignRequest{Key: ref("sig", 0), Algorithm: cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_P256_SHA256, Digest: digest[:20]}))
			return err
		}, connect.CodeInvalidArgument},
		{"sign: with an AES key", func() error {
			_, err := c.Sign(ctx, connect.NewRequest(&cryptov1.SignRequest{Key: ref("wrap", 0), Algorithm: cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_P256_SHA256, Digest: digest[:]}))
			return err
		}, connect.CodeFailedPrecondition},
		{"encrypt: with a signing key", func() error {
			_, err := c.Encrypt(ctx, connect.NewRequest(&cryptov1.EncryptRequest{Key: ref("sig", 0), Plaintext: []byte("x")}))
			return err
		}, connect.CodeFailedPrecondition},
		{"encrypt: oversized", func() error {
			_, err := c.Encrypt(ctx, connect.NewRequest(&cryptov1.EncryptRequest{Key: ref("wrap", 0), Plaintext: make([]byte, 5000)}))
			return err
		}, connect.CodeInvalidArgument},
		{"decrypt: other associated data", func() error {
			_, err := c.Decrypt(ctx, connect.NewRequest(&cryptov1.DecryptRequest{Key: ref("wrap", 0), Ciphertext: enc1.Msg.GetCiphertext(), AssociatedData: []byte("other")}))
			return err
		}, connect.CodeInvalidArgument},
		{"decrypt: altered", func() error {
			_, err := c.Decrypt(ctx, connect.NewRequest(&cryptov1.DecryptRequest{Key: ref("wrap", 0), Ciphertext: altered, AssociatedData: []byte("ad")}))
			return err
		}, connect.CodeInvalidArgument},
		{"decrypt: version mismatch", func() error {
			_, err := c.Decrypt(ctx, connect.NewRequest(&cryptov1.DecryptRequest{Key: ref("wrap", 2), Ciphertext: enc1.Msg.GetCiphertext(), AssociatedData: []byte("ad")}))
			return err
		}, connect.CodeInvalidArgument},
		{"public key of an AES key", func() error {
			_, err := c.GetPublicKey(ctx, connect.NewRequest(&cryptov1.GetPublicKeyRequest{Key: ref("wrap", 0)}))
			return err
		}, connect.CodeFailedPrecondition},
		{"another namespace", func() error {
			_, err := c.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: "other", Name: "x", Spec: cryptov1.KeySpec_KEY_SPEC_EC_P256}))
			return err
		}, connect.CodePermissionDenied},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); connect.CodeOf(err) != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	for _, want := range []bool{true, false} {
		d, err := c.DestroyKey(ctx, connect.NewRequest(&cryptov1.DestroyKeyRequest{Namespace: cryptodtest.Namespace, Name: "wrap"}))
		if err != nil || d.Msg.GetDestroyed() != want {
			t.Fatalf("DestroyKey: %v, %v; want destroyed %v", d, err, want)
		}
	}
	if _, err := c.Decrypt(ctx, connect.NewRequest(&cryptov1.DecryptRequest{Key: ref("wrap", 0), Ciphertext: enc2.Msg.GetCiphertext(), AssociatedData: []byte("ad")})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("Decrypt with a destroyed key: %v", err)
	}
	if n := f.Token.Objects(t); n != 4 {
		t.Fatalf("%d objects left, want the two versions of the signing key", n)
	}
}

// TestAuthentication: TLS without a client certificate or API key, an
// unknown API key, a certificate from another CA, an expired one and one
// whose CN spells a caller's URI SAN are refused; an API key alone is accepted.
func TestAuthentication(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	ctx := context.Background()
	otherCA := authtest.NewCA(t, "another CA")
	strangerCert, strangerKey := otherCA.ClientURI(t, cryptodtest.Identity).WriteFiles(t, t.TempDir(), "stranger")
	expiredCert, expiredKey := f.CA.Expired(t, cryptodtest.Identity).WriteFiles(t, t.TempDir(), "expired")
	// A CN spelling the URI SAN of a caller of the policy: tokend's guard
	// refuses it, and cryptod reads identities with the same function.
	cnCert, cnKey := f.CA.ClientCN(t, cryptodtest.Identity).WriteFiles(t, t.TempDir(), "cn-uri")
	call := func(c cryptov1connect.CryptoServiceClient) error {
		_, err := c.DestroyKey(ctx, connect.NewRequest(&cryptov1.DestroyKeyRequest{Namespace: cryptodtest.Namespace, Name: "x"}))
		return err
	}
	if err := call(api(t, f, srv, "", "")); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("no credential: %v", err)
	}
	if err := call(api(t, f, srv, "", "", connect.WithInterceptors(bearer("wrong")))); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("unknown API key: %v", err)
	}
	if err := call(api(t, f, srv, strangerCert, strangerKey)); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	if err := call(api(t, f, srv, expiredCert, expiredKey)); err == nil {
		t.Fatal("an expired certificate was accepted")
	}
	if err := call(api(t, f, srv, cnCert, cnKey)); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("a CN that looks like the URI SAN of a caller: %v", err)
	}
	if err := call(api(t, f, srv, "", "", connect.WithInterceptors(bearer(cryptodtest.APIKey)))); err != nil {
		t.Fatalf("API key: %v", err)
	}
}

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}
func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}
func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// TestRefusesToStartWithoutAuthentication: a policy without API keys and
// no client CA would let nobody in, or everybody: cryptod refuses it.
func TestRefusesToStartWithoutAuthentication(t *testing.T) {
	f := cryptodtest.New(t)
	cfg := f.Config(t, "127.0.0.1:0")
	cfg.ClientCAFile = ""
	policy := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(policy, []byte("callers:\n  - name: a\n    identities: [x]\n    namespaces: [n]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.PolicyFile = policy
	if _, err := app.Start(context.Background(), cfg, app.NewLogger(cfg)); err == nil || !strings.Contains(err.Error(), "no caller could authenticate") {
		t.Fatalf("got %v", err)
	}
}

// TestPolicyReload: a policy change takes effect without a restart.
func TestPolicyReload(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	c := api(t, f, srv, f.OtherCert, f.OtherKey)
	ctx := context.Background()
	destroy := func() error {
		_, err := c.DestroyKey(ctx, connect.NewRequest(&cryptov1.DestroyKeyRequest{Namespace: cryptodtest.Namespace, Name: "x"}))
		return err
	}
	if err := destroy(); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("before: %v", err)
	}
	b, err := os.ReadFile(f.PolicyFile)
	if err != nil {
		t.Fatal(err)
	}
	grant := strings.Replace(string(b), "namespaces: [other]", "namespaces: [other, "+cryptodtest.Namespace+"]", 1)
	if err := os.WriteFile(f.PolicyFile, []byte(grant), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for destroy() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the new policy was not applied")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A broken policy keeps the last good one.
	if err := os.WriteFile(f.PolicyFile, []byte("callers: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := destroy(); err != nil {
		t.Fatalf("after a broken policy: %v", err)
	}
}

// TestConfigErrorsNameTheVariable: every missing or invalid setting
// stops start-up with a message that names it, never the PIN.
func TestConfigErrorsNameTheVariable(t *testing.T) {
	base := map[string]string{
		"CRYPTOD_TLS_CERT_FILE": "c", "CRYPTOD_TLS_KEY_FILE": "k", "CRYPTOD_POLICY_FILE": "p",
		"PKCS11_MODULE": "m", "PKCS11_TOKEN_LABEL": "t", "PKCS11_PIN": "s3cr3t",
	}
	if _, err := app.ConfigFromEnv(func(k string) string { return base[k] }); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{
		"CRYPTOD_LISTEN": "8443", "CRYPTOD_TLS_CERT_FILE": "", "CRYPTOD_POLICY_FILE": "", "PKCS11_MODULE": "",
		"PKCS11_PIN": "", "PKCS11_PIN_FILE": "/nonexistent", "SHUTDOWN_TIMEOUT": "soon", "LOG_LEVEL": "loud", "LOG_FORMAT": "xml",
	} {
		t.Run(name, func(t *testing.T) {
			vars := map[string]string{}
			for k, v := range base {
				vars[k] = v
			}
			vars[name] = value
			_, err := app.ConfigFromEnv(func(k string) string { return vars[k] })
			if err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(name, "_FILE")) || strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("%s=%q: %v", name, value, err)
			}
		})
	}
}

// TestReadmeListsEveryVariable keeps the README's cryptod table complete.
func TestReadmeListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## HSM and crypto service")
	if !ok {
		t.Fatal("README.md has no section \"HSM and crypto service\"")
	}
	for _, v := range app.Variables {
		if !strings.Contains(section, "`"+v.Name+"`") {
			t.Errorf("README.md does not document %s for cryptod", v.Name)
		}
	}
}
