package app

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/cmd/cryptod/keystore"
	cryptov1 "github.com/auth-platform/tokenservice/proto/crypto/v1"
	"github.com/auth-platform/tokenservice/proto/crypto/v1/cryptov1connect"
	"github.com/auth-platform/tokenservice/rpc/refusal"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/pkcs11"
)

// service adapts the key store to crypto.v1: it decodes, checks the
// caller's namespace, calls the store and maps its errors to codes.
type service struct {
	store  *keystore.Store
	logger *slog.Logger
}

var _ cryptov1connect.CryptoServiceHandler = (*service)(nil)

var specs = map[cryptov1.KeySpec]pkcs11.KeyType{
	cryptov1.KeySpec_KEY_SPEC_RSA_2048: pkcs11.RSA2048,
	cryptov1.KeySpec_KEY_SPEC_RSA_3072: pkcs11.RSA3072,
	cryptov1.KeySpec_KEY_SPEC_EC_P256:  pkcs11.ECP256,
	cryptov1.KeySpec_KEY_SPEC_EC_P384:  pkcs11.ECP384,
	cryptov1.KeySpec_KEY_SPEC_AES_256:  pkcs11.AES256,
}

func specOf(t pkcs11.KeyType) cryptov1.KeySpec {
	for s, kt := range specs {
		if kt == t {
			return s
		}
	}
	return cryptov1.KeySpec_KEY_SPEC_UNSPECIFIED
}

var algorithms = map[cryptov1.SigningAlgorithm]signing.Algorithm{
	cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_RSA_PKCS1_SHA256:  signing.RS256,
	cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_RSA_PSS_SHA256:    signing.PS256,
	cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_P256_SHA256: signing.ES256,
	cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_P384_SHA384: signing.ES384,
}

// authorize returns PERMISSION_DENIED unless the caller may use ns.
func authorize(ctx context.Context, ns string) error {
	c := callerFrom(ctx)
	if c == nil || !c.mayUse(ns) {
		return refusals().Error(errNamespace)
	}
	return nil
}

func ref(k *cryptov1.KeyRef) keystore.Ref {
	return keystore.Ref{Namespace: k.GetNamespace(), Name: k.GetName(), Version: k.GetVersion()}
}

func keyRef(r keystore.Ref, version uint32) *cryptov1.KeyRef {
	return &cryptov1.KeyRef{Namespace: r.Namespace, Name: r.Name, Version: version}
}

// errNamespace refuses a caller the namespace it names.
var errNamespace = errors.New("namespace not allowed for this caller")

// refusals is cryptod's one table of refusals, in the form of tokend's
// (package refusal): cryptod is not an OAuth service, so a refusal has a
// Connect code and a short text, and no OAuth code. An HSM failure reads
// the same whatever its cause; its detail goes to the log.
func refusals() refusal.Table {
	return refusal.Table{
		{Err: errUnauthenticated, Code: connect.CodeUnauthenticated, Public: "unauthenticated"},
		{Err: errNamespace, Code: connect.CodePermissionDenied, Public: "namespace not allowed for this caller"},
		// The Detail names the field; it echoes only the caller's request.
		{Err: keystore.ErrInvalid, Code: connect.CodeInvalidArgument},
		{Err: keystore.ErrDecrypt, Code: connect.CodeInvalidArgument, Public: "ciphertext does not decrypt"},
		{Err: keystore.ErrNotFound, Code: connect.CodeNotFound, Public: "key not found"},
		{Err: keystore.ErrExists, Code: connect.CodeAlreadyExists, Public: "key exists with another type"},
		{Err: keystore.ErrPurpose, Code: connect.CodeFailedPrecondition, Public: "key of another purpose"},
		{Err: context.Canceled, Code: connect.CodeCanceled, Public: "context canceled"},
		{Err: context.DeadlineExceeded, Code: connect.CodeDeadlineExceeded, Public: "context deadline exceeded"},
		{Code: connect.CodeUnavailable, Public: "the HSM cannot serve the call", Log: true},
	}
}

// fail maps a store error to its refusal (refusals). HSM failures are
// logged with their detail.
func (s *service) fail(ctx context.Context, op string, err error) error {
	r := refusals().Rule(err)
	if r.Log {
		s.logger.ErrorContext(ctx, "HSM operation failed", "operation", op, "error", err)
	}
	return r.Error(err)
}

func (s *service) CreateKey(ctx context.Context, req *connect.Request[cryptov1.CreateKeyRequest]) (*connect.Response[cryptov1.CreateKeyResponse], error) {
	m := req.Msg
	if err := authorize(ctx, m.GetNamespace()); err != nil {
		return nil, err
	}
	t, ok := specs[m.GetSpec()]
	if !ok {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("unknown key spec"))
	}
	r, created, err := s.store.Create(ctx, m.GetNamespace(), m.GetName(), t)
	if err != nil {
		return nil, s.fail(ctx, "create", err)
	}
	if created {
		s.logger.InfoContext(ctx, "key created", "caller", callerFrom(ctx).Name, "key", r.String(), "spec", t.String())
	}
	return connect.NewResponse(&cryptov1.CreateKeyResponse{Key: keyRef(r, r.Version), Spec: m.GetSpec(), Created: created}), nil
}

func (s *service) RotateKey(ctx context.Context, req *connect.Request[cryptov1.RotateKeyRequest]) (*connect.Response[cryptov1.RotateKeyResponse], error) {
	m := req.Msg
	if err := authorize(ctx, m.GetNamespace()); err != nil {
		return nil, err
	}
	r, t, err := s.store.Rotate(ctx, m.GetNamespace(), m.GetName())
	if err != nil {
		return nil, s.fail(ctx, "rotate", err)
	}
	s.logger.InfoContext(ctx, "key rotated", "caller", callerFrom(ctx).Name, "key", r.String())
	return connect.NewResponse(&cryptov1.RotateKeyResponse{Key: keyRef(r, r.Version), Spec: specOf(t)}), nil
}

func (s *service) GetPublicKey(ctx context.Context, req *connect.Request[cryptov1.GetPublicKeyRequest]) (*connect.Response[cryptov1.GetPublicKeyResponse], error) {
	r := ref(req.Msg.GetKey())
	if err := authorize(ctx, r.Namespace); err != nil {
		return nil, err
	}
	der, t, v, err := s.store.PublicKey(ctx, r)
	if err != nil {
		return nil, s.fail(ctx, "public_key", err)
	}
	return connect.NewResponse(&cryptov1.GetPublicKeyResponse{Key: keyRef(r, v), Spec: specOf(t), PublicKey: der}), nil
}

func (s *service) Sign(ctx context.Context, req *connect.Request[cryptov1.SignRequest]) (*connect.Response[cryptov1.SignResponse], error) {
	r := ref(req.Msg.GetKey())
	if err := authorize(ctx, r.Namespace); err != nil {
		return nil, err
	}
	alg, ok := algorithms[req.Msg.GetAlgorithm()]
	if !ok {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("unknown signing algorithm"))
	}
	sig, v, err := s.store.Sign(ctx, r, alg, req.Msg.GetDigest())
	if err != nil {
		return nil, s.fail(ctx, "sign", err)
	}
	return connect.NewResponse(&cryptov1.SignResponse{Key: keyRef(r, v), Signature: sig}), nil
}

func (s *service) Encrypt(ctx context.Context, req *connect.Request[cryptov1.EncryptRequest]) (*connect.Response[cryptov1.EncryptResponse], error) {
	r := ref(req.Msg.GetKey())
	if err := authorize(ctx, r.Namespace); err != nil {
		return nil, err
	}
	ct, v, err := s.store.Encrypt(ctx, r, req.Msg.GetPlaintext(), req.Msg.GetAssociatedData())
	if err != nil {
		return nil, s.fail(ctx, "encrypt", err)
	}
	return connect.NewResponse(&cryptov1.EncryptResponse{Key: keyRef(r, v), Ciphertext: ct}), nil
}

func (s *service) Decrypt(ctx context.Context, req *connect.Request[cryptov1.DecryptRequest]) (*connect.Response[cryptov1.DecryptResponse], error) {
	r := ref(req.Msg.GetKey())
	if err := authorize(ctx, r.Namespace); err != nil {
		return nil, err
	}
	pt, v, err := s.store.Decrypt(ctx, r, req.Msg.GetCiphertext(), req.Msg.GetAssociatedData())
	if err != nil {
		return nil, s.fail(ctx, "decrypt", err)
	}
	return connect.NewResponse(&cryptov1.DecryptResponse{Key: keyRef(r, v), Plaintext: pt}), nil
}

func (s *service) DestroyKey(ctx context.Context, req *connect.Request[cryptov1.DestroyKeyRequest]) (*connect.Response[cryptov1.DestroyKeyResponse], error) {
	m := req.Msg
	if err := authorize(ctx, m.GetNamespace()); err != nil {
		return nil, err
	}
	destroyed, err := s.store.Destroy(ctx, m.GetNamespace(), m.GetName())
	if err != nil {
		return nil, s.fail(ctx, "destroy", err)
	}
	if destroyed {
		s.logger.InfoContext(ctx, "key destroyed", "caller", callerFrom(ctx).Name, "key", m.GetNamespace()+"/"+m.GetName())
	}
	return connect.NewResponse(&cryptov1.DestroyKeyResponse{Destroyed: destroyed}), nil
}
