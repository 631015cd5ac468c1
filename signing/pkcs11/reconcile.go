package pkcs11

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	p11 "github.com/miekg/pkcs11"
)

// KeyObject is a key this backend made on the token, as its objects say:
// a complete pair has both halves.
type KeyObject struct {
	// Ref is the objects' CKA_ID, hex: StoredKey.Ref.
	Ref string
	// Intent is the intent the key was made for: CKA_LABEL without the
	// label prefix.
	Intent string
	// Private and Public report which halves of a pair exist; Secret, a
	// secret key (Generate's AES256).
	Private, Public, Secret bool

	objs []object
}

// Objects lists the keys this backend made on the token (objects whose
// CKA_LABEL has the configured prefix), ordered by Ref.
func (b *Backend) Objects(ctx context.Context) ([]KeyObject, error) {
	objs, err := b.tok.find(ctx, []*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true)})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: list key objects: %w", err)
	}
	objs = slices.DeleteFunc(objs, func(o object) bool { return !hasPrefix(o, b.cfg.LabelPrefix) })
	keys := group(objs)
	for i := range keys {
		keys[i].Intent = strings.TrimPrefix(keys[i].objs[0].label, b.cfg.LabelPrefix)
	}
	return keys, nil
}

// group gathers objects by CKA_ID (and label: one intent's key).
func group(objs []object) []KeyObject {
	type gk struct{ id, label string }
	byKey := map[gk]*KeyObject{}
	var keys []*KeyObject
	for _, o := range objs {
		k := gk{string(o.id), o.label}
		ko := byKey[k]
		if ko == nil {
			ko = &KeyObject{Ref: hex.EncodeToString(o.id)}
			byKey[k] = ko
			keys = append(keys, ko)
		}
		ko.objs = append(ko.objs, o)
		switch o.class {
		case p11.CKO_PRIVATE_KEY:
			ko.Private = true
		case p11.CKO_PUBLIC_KEY:
			ko.Public = true
		case p11.CKO_SECRET_KEY:
			ko.Secret = true
		}
	}
	out := make([]KeyObject, len(keys))
	for i, k := range keys {
		out[i] = *k
	}
	slices.SortFunc(out, func(a, b KeyObject) int { return cmp.Compare(a.Ref, b.Ref) })
	return out
}

// References is what the event log refers to on the token.
type References struct {
	// Refs holds the StoredKey.Ref (backend_key_ref) of every key of this
	// backend the log records whose material it has not deleted yet
	// (key.generated without key.material_deleted), destroyed ones
	// included: the lifecycle discards those itself.
	Refs map[string]bool
	// Intents holds every intent of this backend the log requested
	// (key.requested) and no key.generated fulfils yet: a replica may be
	// making its key at this moment, or will finish it after a crash.
	Intents map[string]bool
}

// Reconcile deletes the keys this backend made that the log does not
// reference: a key made for an intent another replica fulfilled with
// its own key, or one whose Discard was interrupted halfway. It lists
// the token's objects first and only then calls refs, which must read
// the log up to its current head (not a projection that may lag): an
// intent is recorded before its key is generated, so every object
// listed has its intent or its key in what refs returns. It returns the
// keys it deleted; deleting is idempotent, and a reconciler running on
// several replicas at once is harmless.
func (b *Backend) Reconcile(ctx context.Context, refs func(context.Context) (References, error)) ([]KeyObject, error) {
	keys, err := b.Objects(ctx)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, nil
	}
	r, err := refs(ctx)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: reconcile: references: %w", err)
	}
	var orphans []KeyObject
	var objs []object
	for _, k := range keys {
		if r.Refs[k.Ref] || (k.Intent != "" && r.Intents[k.Intent]) {
			continue
		}
		orphans = append(orphans, k)
		objs = append(objs, k.objs...)
	}
	if err := b.tok.destroy(ctx, objs); err != nil {
		return nil, fmt.Errorf("pkcs11: reconcile: %w", err)
	}
	return orphans, nil
}
