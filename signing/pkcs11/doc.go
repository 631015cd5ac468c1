// Package pkcs11 is the signing backend whose keys live in an HSM,
// reached through its PKCS#11 (v2.40) library with
// github.com/ThalesGroup/crypto11. The private key is generated inside the
// token, is sensitive and not extractable, and never leaves it: Sign
// hashes the JWS signing input here and the token signs the digest.
//
// # Algorithms
//
// RS256 (CKM_RSA_PKCS over a DigestInfo) and PS256 (CKM_RSA_PKCS_PSS,
// MGF1-SHA-256, 32-byte salt, RFC 7518 §3.5) with RSA-2048 or RSA-3072
// keys (Config.RSABits); ES256 with P-256 and ES384 with P-384 keys
// (CKM_ECDSA). PKCS#11 returns the raw R||S of ECDSA, crypto11 re-encodes
// it as DER, and signing.DERToJOSE makes the JOSE R||S of RFC 7518 §3.4.
//
// # Configuration
//
// Config names the module (the vendor's library), the token (by label)
// and the user PIN. Only cmd/ reads settings: it takes the PIN from an
// environment variable or from a file with PINFromFile. No error and no
// printed or logged Config contains the PIN. A wrong PIN is
// ErrPINIncorrect; the caller must not retry it, as tokens lock the PIN
// after a few failures.
//
// # The intent scheme
//
// The keyring records a key.requested event with an intent ID before a
// remote backend makes a key, then Backend.Create(alg, intent), then
// key.generated naming the key. Create must be idempotent per intent: a
// process that dies after the token made the pair and before
// key.generated leaves a pair nobody recorded, and the next attempt must
// finish the intent with that pair rather than make another.
//
// So the pair is generated (C_GenerateKeyPair, one call that makes both
// halves) with the intent on it: CKA_LABEL is Config.LabelPrefix followed
// by the intent ID, and CKA_ID is 16 random bytes, the key's reference
// (StoredKey.Ref, in hex). Create first looks for a complete pair with
// that label and returns it if there is one. The CKA_ID is random rather
// than derived from the intent because two replicas may finish one
// intent at the same time: each then makes its own pair, the log records
// one, and the other replica's Discard must delete its own pair and not
// both. Of several pairs for an intent, Create returns the one with the
// least CKA_ID, so replicas agree.
//
// Discard deletes the objects with the key's CKA_ID and the label prefix,
// the private half first, so that an interruption leaves only public
// material; a Discard called again deletes what is left, and one with
// nothing left to delete succeeds.
//
// # The reconciler
//
// Some objects can still outlive the log's interest in them: the pair of
// a replica that lost the race and died before its Discard, or the public
// half an interrupted Discard left (crypto11 can neither find nor delete
// a half without its private key, so the backend reaches those objects
// through github.com/miekg/pkcs11 directly). Backend.Reconcile lists the
// objects whose CKA_LABEL has the prefix, then asks the caller for what
// the log references (References: recorded keys whose material is not
// deleted, intents still pending), and deletes every other one. It lists
// before it asks so that an object being made for an intent recorded
// meanwhile is seen as referenced; the caller must read the log up to its
// head, not a lagging projection. Deployments that share a token need
// different label prefixes, or each would delete the other's keys.
//
// # The key store
//
// A crypto service in front of the token (cmd/cryptod) keeps its keys
// here too, named by their labels: Generate makes an RSA, EC or AES-256
// key under a label, idempotently like Create; Find looks a label up;
// Signer opens a pair and SignDigest signs a digest the caller hashed;
// AEAD encrypts and decrypts with an AES key inside the token
// (CKM_AES_GCM, which SoftHSM2 implements); Destroy deletes a key.
//
// A Backend is safe for concurrent use; its Signers take a session from
// a pool (Config.MaxSessions) for each signature. PKCS#11 calls cannot be
// cancelled, so remote signing belongs behind signing/breaker, which
// bounds the wait and falls back to a local key.
//
// Tests run against SoftHSM2; package hsmtest gives each test its own
// token.
package pkcs11
