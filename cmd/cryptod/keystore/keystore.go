// Package keystore is cryptod's keys: named keys with versions, kept on a
// PKCS#11 token through signing/pkcs11, addressed as crypto.v1 addresses
// them (namespace, name, version).
//
// The token is the only state. Every version of a key is one key object
// (a pair, or an AES secret key) whose CKA_LABEL is the backend's label
// prefix followed by "<namespace>/<name>/<version>/<type>", so Open
// rebuilds the index from the token's labels and a restart loses
// nothing. Version 1 is made by Create, later ones by Rotate; the
// highest is the primary one. Create is idempotent per namespace and
// name: pkcs11.Backend.Generate is idempotent per label, so a Create
// retried after a crash between the token's generation and the answer
// finds the key the first attempt made.
//
// Encrypt seals with AES-256-GCM inside the token under the primary
// version: the ciphertext is version (4 bytes, big endian) || nonce
// (12 random bytes) || ciphertext and tag, so Decrypt finds its version.
// With random nonces a version must encrypt fewer than 2^32 times (NIST
// SP 800-38D §8.3): rotate the key long before (a data key wrapped once
// an hour is 9,000 encryptions a year).
//
// A Store is safe for concurrent use. It assumes it is the only writer
// of its label prefix: two cryptod processes sharing a token need
// different prefixes.
package keystore

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/pkcs11"
)

var (
	// ErrInvalid is returned for a malformed namespace or name, an
	// algorithm the key's type does not sign with, a digest of the wrong
	// length, or an oversized input.
	ErrInvalid = errors.New("keystore: invalid argument")
	// ErrNotFound is returned for a key or version that does not exist.
	ErrNotFound = errors.New("keystore: key not found")
	// ErrExists is returned by Create for a name that exists with another
	// key type.
	ErrExists = errors.New("keystore: key exists with another type")
	// ErrPurpose is returned when a signing key is asked to encrypt, or an
	// encryption key to sign.
	ErrPurpose = errors.New("keystore: key of another purpose")
	// ErrDecrypt is returned for a ciphertext that does not decrypt. It
	// says no more on purpose.
	ErrDecrypt = errors.New("keystore: cannot decrypt")
)

// invalid returns an error wrapping ErrInvalid whose Detail names what the
// caller got wrong; it echoes only the caller's own request, so cryptod
// may show it.
func invalid(format string, args ...any) error {
	return &invalidError{detail: fmt.Sprintf(format, args...)}
}

type invalidError struct{ detail string }

func (e *invalidError) Error() string  { return ErrInvalid.Error() + ": " + e.detail }
func (e *invalidError) Unwrap() error  { return ErrInvalid }
func (e *invalidError) Detail() string { return e.detail }

// MaxInput bounds a plaintext or associated data.
const MaxInput = 4096

var (
	namespaceRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	nameRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// Ref addresses a key's version; Version 0 is the primary one where a
// call allows it.
type Ref struct {
	Namespace, Name string
	Version         uint32
}

func (r Ref) String() string {
	return r.Namespace + "/" + r.Name + "/" + strconv.FormatUint(uint64(r.Version), 10)
}

// Check returns ErrInvalid for a malformed namespace or name.
func (r Ref) Check() error {
	if !namespaceRE.MatchString(r.Namespace) {
		return invalid("namespace %q", r.Namespace)
	}
	if !nameRE.MatchString(r.Name) {
		return invalid("key name %q", r.Name)
	}
	return nil
}

type id struct{ ns, name string }

// version is one key object; its signers and AEAD are opened once.
type version struct {
	ref     string // the object's pkcs11 Ref
	mu      sync.Mutex
	signers map[signing.Algorithm]*pkcs11.Signer
	aead    *pkcs11.AEAD
}

type key struct {
	typ      pkcs11.KeyType
	versions map[uint32]*version
	primary  uint32
}

// Store is the key store. It is safe for concurrent use.
type Store struct {
	b    *pkcs11.Backend
	rand io.Reader

	mu   sync.RWMutex // guards keys; writers also serialize creation
	keys map[id]*key
}

// Open returns the store of b's token, indexed from the labels of its key
// objects. rand makes nonces (crypto/rand.Reader).
func Open(ctx context.Context, b *pkcs11.Backend, rand io.Reader) (*Store, error) {
	objs, err := b.Objects(ctx)
	if err != nil {
		return nil, err
	}
	s := &Store{b: b, rand: rand, keys: map[id]*key{}}
	for _, o := range objs {
		if !(o.Private && o.Public) && !o.Secret {
			continue // half a pair: a destruction interrupted halfway
		}
		r, typ, ok := parseLabel(o.Intent)
		if !ok {
			continue
		}
		k := s.keys[id{r.Namespace, r.Name}]
		if k == nil {
			k = &key{typ: typ, versions: map[uint32]*version{}}
			s.keys[id{r.Namespace, r.Name}] = k
		}
		if v, dup := k.versions[r.Version]; dup && v.ref < o.Ref {
			continue // two objects for one label: the least, as pkcs11.Find picks
		}
		k.versions[r.Version] = &version{ref: o.Ref}
		k.primary = max(k.primary, r.Version)
	}
	return s, nil
}

// Types lists the key types of the store.
var Types = []pkcs11.KeyType{pkcs11.RSA2048, pkcs11.RSA3072, pkcs11.ECP256, pkcs11.ECP384, pkcs11.AES256}

func parseType(s string) (pkcs11.KeyType, bool) {
	for _, t := range Types {
		if t.String() == s {
			return t, true
		}
	}
	return 0, false
}

func label(r Ref, t pkcs11.KeyType) string { return r.String() + "/" + t.String() }

func parseLabel(l string) (Ref, pkcs11.KeyType, bool) {
	parts := strings.Split(l, "/")
	if len(parts) != 4 {
		return Ref{}, 0, false
	}
	v, err := strconv.ParseUint(parts[2], 10, 32)
	t, ok := parseType(parts[3])
	r := Ref{Namespace: parts[0], Name: parts[1], Version: uint32(v)}
	if err != nil || v == 0 || !ok || r.Check() != nil {
		return Ref{}, 0, false
	}
	return r, t, true
}

// Create makes version 1 of the key namespace/name of type t, or returns
// the existing key's primary version (created false). It returns
// ErrExists when the key exists with another type.
func (s *Store) Create(ctx context.Context, namespace, name string, t pkcs11.KeyType) (r Ref, created bool, err error) {
	r = Ref{Namespace: namespace, Name: name, Version: 1}
	if err := r.Check(); err != nil {
		return Ref{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.keys[id{namespace, name}]; k != nil {
		if k.typ != t {
			return Ref{}, false, fmt.Errorf("%w: %s/%s is %s", ErrExists, namespace, name, k.typ)
		}
		r.Version = k.primary
		return r, false, nil
	}
	ref, _, err := s.b.Generate(ctx, t, label(r, t))
	if err != nil {
		return Ref{}, false, err
	}
	s.keys[id{namespace, name}] = &key{typ: t, versions: map[uint32]*version{1: {ref: ref}}, primary: 1}
	return r, true, nil
}

// Rotate adds a version to the key and makes it primary.
func (s *Store) Rotate(ctx context.Context, namespace, name string) (Ref, pkcs11.KeyType, error) {
	r := Ref{Namespace: namespace, Name: name}
	if err := r.Check(); err != nil {
		return Ref{}, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[id{namespace, name}]
	if k == nil {
		return Ref{}, 0, fmt.Errorf("%w: %s/%s", ErrNotFound, namespace, name)
	}
	r.Version = k.primary + 1
	ref, _, err := s.b.Generate(ctx, k.typ, label(r, k.typ))
	if err != nil {
		return Ref{}, 0, err
	}
	k.versions[r.Version] = &version{ref: ref}
	k.primary = r.Version
	return r, k.typ, nil
}

// Destroy deletes every version of the key. It reports false when there
// was no such key.
func (s *Store) Destroy(ctx context.Context, namespace, name string) (bool, error) {
	r := Ref{Namespace: namespace, Name: name}
	if err := r.Check(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[id{namespace, name}]
	if k == nil {
		return false, nil
	}
	for _, v := range slices.Sorted(maps.Keys(k.versions)) {
		if err := s.b.Destroy(ctx, k.versions[v].ref); err != nil {
			return false, err
		}
		delete(k.versions, v) // a retry resumes with what is left
	}
	delete(s.keys, id{namespace, name})
	return true, nil
}

// lookup returns the key's type and the version r names (0: primary).
func (s *Store) lookup(r Ref) (pkcs11.KeyType, uint32, *version, error) {
	if err := r.Check(); err != nil {
		return 0, 0, nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	k := s.keys[id{r.Namespace, r.Name}]
	if k == nil {
		return 0, 0, nil, fmt.Errorf("%w: %s/%s", ErrNotFound, r.Namespace, r.Name)
	}
	n := r.Version
	if n == 0 {
		n = k.primary
	}
	v := k.versions[n]
	if v == nil {
		return 0, 0, nil, fmt.Errorf("%w: %s/%s version %d", ErrNotFound, r.Namespace, r.Name, n)
	}
	return k.typ, n, v, nil
}

// Algorithms returns the algorithms a key type signs with.
func Algorithms(t pkcs11.KeyType) []signing.Algorithm {
	switch t {
	case pkcs11.RSA2048, pkcs11.RSA3072:
		return []signing.Algorithm{signing.RS256, signing.PS256}
	case pkcs11.ECP256:
		return []signing.Algorithm{signing.ES256}
	case pkcs11.ECP384:
		return []signing.Algorithm{signing.ES384}
	}
	return nil
}

func (s *Store) signer(ctx context.Context, t pkcs11.KeyType, v *version, alg signing.Algorithm) (*pkcs11.Signer, error) {
	if t == pkcs11.AES256 {
		return nil, fmt.Errorf("%w: an encryption key does not sign", ErrPurpose)
	}
	if !slices.Contains(Algorithms(t), alg) {
		return nil, invalid("a %s key does not sign %s", t, alg)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if sg := v.signers[alg]; sg != nil {
		return sg, nil
	}
	sg, err := s.b.Signer(ctx, v.ref, alg)
	if err != nil {
		return nil, err
	}
	if v.signers == nil {
		v.signers = map[signing.Algorithm]*pkcs11.Signer{}
	}
	v.signers[alg] = sg
	return sg, nil
}

// PublicKey returns the DER SubjectPublicKeyInfo of a signing key's
// version, the type, and the version.
func (s *Store) PublicKey(ctx context.Context, r Ref) ([]byte, pkcs11.KeyType, uint32, error) {
	t, n, v, err := s.lookup(r)
	if err != nil {
		return nil, 0, 0, err
	}
	if t == pkcs11.AES256 {
		return nil, 0, 0, fmt.Errorf("%w: an encryption key has no public key", ErrPurpose)
	}
	sg, err := s.signer(ctx, t, v, Algorithms(t)[0])
	if err != nil {
		return nil, 0, 0, err
	}
	der, err := x509.MarshalPKIXPublicKey(sg.Public())
	if err != nil {
		return nil, 0, 0, err
	}
	return der, t, n, nil
}

// Sign signs digest with the version r names; ECDSA signatures are DER.
func (s *Store) Sign(ctx context.Context, r Ref, alg signing.Algorithm, digest []byte) ([]byte, uint32, error) {
	t, n, v, err := s.lookup(r)
	if err != nil {
		return nil, 0, err
	}
	sg, err := s.signer(ctx, t, v, alg)
	if err != nil {
		return nil, 0, err
	}
	want := 32
	if alg == signing.ES384 {
		want = 48
	}
	if len(digest) != want {
		return nil, 0, invalid("a digest of %d bytes for %s (want %d)", len(digest), alg, want)
	}
	sig, err := sg.SignDigest(ctx, digest)
	return sig, n, err
}

func (s *Store) aead(ctx context.Context, t pkcs11.KeyType, v *version) (*pkcs11.AEAD, error) {
	if t != pkcs11.AES256 {
		return nil, fmt.Errorf("%w: a signing key does not encrypt", ErrPurpose)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.aead != nil {
		return v.aead, nil
	}
	a, err := s.b.AEAD(ctx, v.ref)
	if err != nil {
		return nil, err
	}
	v.aead = a
	return a, nil
}

const header = 4 + pkcs11.NonceSize

// Encrypt encrypts plaintext under the version r names (0: primary, the
// usual call), authenticating aad.
func (s *Store) Encrypt(ctx context.Context, r Ref, plaintext, aad []byte) ([]byte, uint32, error) {
	if len(plaintext) > MaxInput || len(aad) > MaxInput {
		return nil, 0, invalid("plaintext or associated data over %d bytes", MaxInput)
	}
	t, n, v, err := s.lookup(r)
	if err != nil {
		return nil, 0, err
	}
	a, err := s.aead(ctx, t, v)
	if err != nil {
		return nil, 0, err
	}
	out := make([]byte, header, header+len(plaintext)+16)
	binary.BigEndian.PutUint32(out, n)
	if _, err := io.ReadFull(s.rand, out[4:header]); err != nil {
		return nil, 0, fmt.Errorf("keystore: nonce: %w", err)
	}
	ct, err := a.Seal(ctx, out[4:header], plaintext, aad)
	if err != nil {
		return nil, 0, err
	}
	return append(out, ct...), n, nil
}

// Decrypt decrypts what Encrypt returned for the key r names, with the
// version the ciphertext names (r.Version, if set, must be that one).
func (s *Store) Decrypt(ctx context.Context, r Ref, ciphertext, aad []byte) ([]byte, uint32, error) {
	if len(ciphertext) < header+16 {
		return nil, 0, ErrDecrypt
	}
	n := binary.BigEndian.Uint32(ciphertext)
	if n == 0 || (r.Version != 0 && r.Version != n) {
		return nil, 0, ErrDecrypt
	}
	r.Version = n
	t, _, v, err := s.lookup(r)
	if err != nil {
		return nil, 0, err
	}
	a, err := s.aead(ctx, t, v)
	if err != nil {
		return nil, 0, err
	}
	pt, err := a.Open(ctx, ciphertext[4:header], ciphertext[header:], aad)
	if errors.Is(err, pkcs11.ErrDecrypt) {
		return nil, 0, ErrDecrypt
	}
	return pt, n, err
}
