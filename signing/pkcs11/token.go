package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// token is the part of the token crypto11 does not reach: finding objects
// by label or CKA_ID whatever their class, and deleting any one of them,
// among them the public half of a pair whose private half is already gone
// (a Discard interrupted between its two deletions), which crypto11 can
// neither find nor delete.
//
// It opens the same module again through miekg/pkcs11. crypto11 has
// initialised the library first, so C_Initialize here returns
// CKR_CRYPTOKI_ALREADY_INITIALIZED, and C_Finalize is left to crypto11:
// close releases only this handle, and runs before crypto11's Close. The
// login is the application's, shared by every session: crypto11's
// long-lived session holds it, and a session opened here logs in again
// only if it is not (CKR_USER_ALREADY_LOGGED_IN otherwise).
type token struct {
	mu   sync.Mutex // one raw session at a time: these calls are rare
	ctx  *p11.Ctx
	slot uint
	pin  string
}

func openToken(module, label, pin string) (*token, error) {
	c := p11.New(module)
	if c == nil {
		return nil, fmt.Errorf("pkcs11: load module %s", module)
	}
	if err := c.Initialize(); err != nil && !isCKR(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		c.Destroy()
		return nil, fmt.Errorf("pkcs11: initialise module %s: %w", module, err)
	}
	slots, err := c.GetSlotList(true)
	if err != nil {
		c.Destroy()
		return nil, fmt.Errorf("pkcs11: list slots: %w", err)
	}
	for _, s := range slots {
		info, err := c.GetTokenInfo(s)
		if err != nil {
			c.Destroy()
			return nil, fmt.Errorf("pkcs11: token info of slot %d: %w", s, err)
		}
		if info.Label == label {
			return &token{ctx: c, slot: s, pin: pin}, nil
		}
	}
	c.Destroy()
	return nil, fmt.Errorf("pkcs11: no token labelled %q", label)
}

func (t *token) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx != nil {
		t.ctx.Destroy()
		t.ctx = nil
	}
}

func isCKR(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}

// object is one key object: a private or public half, or a secret key.
type object struct {
	handle p11.ObjectHandle
	class  uint
	id     []byte
	label  string
}

// find returns the token's private, public and secret key objects that
// match template.
func (t *token) find(ctx context.Context, template []*p11.Attribute) ([]object, error) {
	var out []object
	err := t.session(ctx, func(sh p11.SessionHandle) error {
		for _, class := range []uint{p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY, p11.CKO_SECRET_KEY} {
			handles, err := t.findHandles(sh, append([]*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, class)}, template...))
			if err != nil {
				return err
			}
			for _, h := range handles {
				attrs, err := t.ctx.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, nil), p11.NewAttribute(p11.CKA_LABEL, nil)})
				if isCKR(err, p11.CKR_OBJECT_HANDLE_INVALID) {
					continue // deleted meanwhile
				}
				if err != nil {
					return fmt.Errorf("attributes of object %d: %w", h, err)
				}
				out = append(out, object{handle: h, class: class, id: attrs[0].Value, label: string(attrs[1].Value)})
			}
		}
		return nil
	})
	return out, err
}

func (t *token) findHandles(sh p11.SessionHandle, template []*p11.Attribute) (handles []p11.ObjectHandle, err error) {
	if err := t.ctx.FindObjectsInit(sh, template); err != nil {
		return nil, fmt.Errorf("find objects: %w", err)
	}
	defer func() {
		if ferr := t.ctx.FindObjectsFinal(sh); err == nil && ferr != nil {
			err = fmt.Errorf("find objects: %w", ferr)
		}
	}()
	for {
		hs, _, err := t.ctx.FindObjects(sh, 64)
		if err != nil {
			return nil, fmt.Errorf("find objects: %w", err)
		}
		if len(hs) == 0 {
			return handles, nil
		}
		handles = append(handles, hs...)
	}
}

// destroy deletes objs, private halves and secret keys first: an
// interruption leaves at most public material, which the next Discard or
// the reconciler removes.
// An object already gone is deleted.
func (t *token) destroy(ctx context.Context, objs []object) error {
	return t.session(ctx, func(sh p11.SessionHandle) error {
		for _, class := range []uint{p11.CKO_SECRET_KEY, p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY} {
			for _, o := range objs {
				if o.class != class {
					continue
				}
				if err := t.ctx.DestroyObject(sh, o.handle); err != nil && !isCKR(err, p11.CKR_OBJECT_HANDLE_INVALID) {
					return fmt.Errorf("delete object %q (CKA_ID %x): %w", o.label, o.id, err)
				}
			}
		}
		return nil
	})
}

// session runs f in a read-write session logged in as the user.
func (t *token) session(ctx context.Context, f func(p11.SessionHandle) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx == nil {
		return ErrClosed
	}
	sh, err := t.ctx.OpenSession(t.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("pkcs11: open session: %w", err)
	}
	defer func() { _ = t.ctx.CloseSession(sh) }() // nothing to undo: the session held no state
	if err := t.ctx.Login(sh, p11.CKU_USER, t.pin); err != nil && !isCKR(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		return fmt.Errorf("pkcs11: log in: %w", err)
	}
	if err := f(sh); err != nil {
		return fmt.Errorf("pkcs11: %w", err)
	}
	return nil
}

func hasPrefix(o object, prefix string) bool { return strings.HasPrefix(o.label, prefix) }
