package cryptosvc

import (
	"context"

	"connectrpc.com/connect"

	cryptov1 "github.com/auth-platform/tokenservice/proto/crypto/v1"
	"github.com/auth-platform/tokenservice/signing/breaker"
)

// DefaultWrapKeyName is the default name of the AES key that wraps data
// keys.
const DefaultWrapKeyName = "seal"

// wrapAAD binds a wrapped data key to its purpose: the service's
// ciphertext of anything else does not unwrap as a data key.
var wrapAAD = []byte("tokenservice seal data key v1")

// KeyWrapper wraps data keys with an AES-256 key of the service
// (Encrypt, Decrypt) for signing/seal's envelope encryption. The key is
// created on first use (CreateKey is idempotent). It is safe for
// concurrent use.
type KeyWrapper struct {
	c   *Client
	key Ref
	b   *breaker.Breaker
}

// KeyWrapper returns the wrapper of the AES key name in the client's
// namespace. Its calls run through b (ops "encrypt" and "decrypt") when
// b is not nil.
func (c *Client) KeyWrapper(name string, b *breaker.Breaker) *KeyWrapper {
	return &KeyWrapper{c: c, key: Ref{Namespace: c.ns, Name: name}, b: b}
}

func (w *KeyWrapper) do(ctx context.Context, op string, f func(context.Context) ([]byte, error)) ([]byte, error) {
	if w.b == nil {
		return f(ctx)
	}
	return w.b.Do(ctx, op, f)
}

// WrapKey encrypts a data key with the primary version of the wrapping
// key, creating the key if the service has none. The result names its
// version.
func (w *KeyWrapper) WrapKey(ctx context.Context, dataKey []byte) ([]byte, error) {
	return w.do(ctx, "encrypt", func(ctx context.Context) ([]byte, error) {
		req := &cryptov1.EncryptRequest{Key: w.key.proto(), Plaintext: dataKey, AssociatedData: wrapAAD}
		resp, err := w.c.api.Encrypt(ctx, connect.NewRequest(req))
		if connect.CodeOf(err) == connect.CodeNotFound {
			if _, err := w.c.api.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{
				Namespace: w.key.Namespace, Name: w.key.Name, Spec: cryptov1.KeySpec_KEY_SPEC_AES_256,
			})); err != nil {
				return nil, callErr("create wrapping key", w.key, err)
			}
			resp, err = w.c.api.Encrypt(ctx, connect.NewRequest(req))
		}
		if err != nil {
			return nil, callErr("wrap a data key with", w.key, err)
		}
		return resp.Msg.GetCiphertext(), nil
	})
}

// UnwrapKey decrypts what WrapKey returned.
func (w *KeyWrapper) UnwrapKey(ctx context.Context, wrapped []byte) ([]byte, error) {
	return w.do(ctx, "decrypt", func(ctx context.Context) ([]byte, error) {
		resp, err := w.c.api.Decrypt(ctx, connect.NewRequest(&cryptov1.DecryptRequest{Key: w.key.proto(), Ciphertext: wrapped, AssociatedData: wrapAAD}))
		if err != nil {
			return nil, callErr("unwrap a data key with", w.key, err)
		}
		return resp.Msg.GetPlaintext(), nil
	})
}
