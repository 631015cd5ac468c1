//go:build cgo

package app

import (
	"context"
	"errors"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/pkcs11"
)

// reconcileEvery is how often the pkcs11 reconciler looks for key
// objects the log does not reference (a replica that lost a race and
// died before discarding its key, an interrupted Discard).
const reconcileEvery = 10 * time.Minute

// pkcs11Algorithms returns the algorithms KMS_PROVIDER=pkcs11 signs with.
func pkcs11Algorithms() []signing.Algorithm { return pkcs11.Algorithms }

// startPKCS11 opens the token of KMS_PROVIDER=pkcs11 and starts its
// reconciler in Main's group: once now, then every reconcileEvery until
// Close.
func (m *Main) startPKCS11(ctx context.Context) (keyring.Backend, error) {
	cfg := m.Config
	pcfg := pkcs11.Config{Module: cfg.PKCS11Module, TokenLabel: cfg.PKCS11TokenLabel, PIN: string(cfg.PKCS11PIN),
		LabelPrefix: cfg.PKCS11LabelPrefix}
	b, err := pkcs11.New(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	m.crypto.closers = append(m.crypto.closers, b.Close)
	m.Logger.Info("PKCS#11 token opened", "pkcs11", pcfg)
	m.group.Go("PKCS#11 reconciler", func(ctx context.Context) error {
		t := time.NewTicker(reconcileEvery)
		defer t.Stop()
		for {
			m.reconcilePKCS11(ctx, b)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
	}, nil)
	return b, nil
}

// reconcilePKCS11 runs the reconciler once and logs what it deleted.
func (m *Main) reconcilePKCS11(ctx context.Context, b *pkcs11.Backend) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	deleted, err := b.Reconcile(ctx, m.pkcs11References)
	if err != nil {
		if ctx.Err() == nil {
			m.Logger.Error("PKCS#11 reconciler failed; retrying at its next run", "error", err)
		}
		return
	}
	for _, k := range deleted {
		m.Logger.Warn("PKCS#11 reconciler deleted a key object the log does not reference", "ref", k.Ref, "intent", k.Intent)
	}
}

// pkcs11References reads what the log references on the token, up to the
// log's current head (the key projection is made to catch up first).
func (m *Main) pkcs11References(ctx context.Context) (pkcs11.References, error) {
	head := uint64(0)
	rec, err := m.Log.LastConsistent(ctx, m.Log.Subjects().Keys())
	switch {
	case err == nil:
		head = rec.Seq
	case !errors.Is(err, eventlog.ErrNotFound):
		return pkcs11.References{}, err
	}
	if err := m.Runner.WaitFor(ctx, head); err != nil {
		return pkcs11.References{}, err
	}
	r := pkcs11.References{Refs: map[string]bool{}, Intents: map[string]bool{}}
	keys, _ := m.Set.Keys()
	for _, k := range keys {
		if k.Backend == pkcs11.BackendName && !k.MaterialDeleted {
			r.Refs[k.Ref] = true
		}
	}
	for _, in := range m.Set.PendingKeyIntents() {
		if in.Backend == pkcs11.BackendName {
			r.Intents[in.ID] = true
		}
	}
	return r, nil
}
