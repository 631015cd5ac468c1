package pkcs11

import "errors"

var (
	// ErrConfig is returned by New for a Config that is incomplete or out
	// of range.
	ErrConfig = errors.New("pkcs11: invalid configuration")
	// ErrPINIncorrect is returned by New when the token refuses the PIN
	// (CKR_PIN_INCORRECT). Tokens lock the PIN after a few failures, so a
	// caller must not retry with the same one.
	ErrPINIncorrect = errors.New("pkcs11: the token refused the PIN")
	// ErrPINLocked is returned by New when the token has locked the user
	// PIN (CKR_PIN_LOCKED); its security officer must reset it.
	ErrPINLocked = errors.New("pkcs11: the token's user PIN is locked")
	// ErrKeyNotFound is returned by Open for a key whose objects are not
	// on the token (deleted, or another token).
	ErrKeyNotFound = errors.New("pkcs11: key not found on the token")
	// ErrDecrypt is returned by AEAD.Open for a ciphertext that does not
	// decrypt: another key, other associated data, or altered bytes. It
	// says no more on purpose.
	ErrDecrypt = errors.New("pkcs11: cannot decrypt")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("pkcs11: backend closed")
)
