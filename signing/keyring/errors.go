package keyring

import "errors"

// ErrNoNewKey is returned by Rotate, Responder.Compromise and the key
// lifecycle when the backend is a Provisioner and the key the operator
// provisioned is already in the log: the operator has to supply the next
// key (a new KMS_KEY_ID, a new version of CRYPTO_SIGNING_KEY) first.
var ErrNoNewKey = errors.New("keyring: no new provisioned key: the operator has to supply the next key first")
