package pkcs11

import (
	"context"
	"encoding/hex"

	p11 "github.com/miekg/pkcs11"
)

// DeletePrivateHalf deletes only the private object of the key ref: the
// state a Discard interrupted between its two deletions leaves.
func (b *Backend) DeletePrivateHalf(ctx context.Context, ref string) error {
	id, err := hex.DecodeString(ref)
	if err != nil {
		return err
	}
	objs, err := b.tok.find(ctx, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)})
	if err != nil {
		return err
	}
	var private []object
	for _, o := range objs {
		if o.class == p11.CKO_PRIVATE_KEY {
			private = append(private, o)
		}
	}
	return b.tok.destroy(ctx, private)
}
