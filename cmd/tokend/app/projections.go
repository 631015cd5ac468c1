package app

import (
	"os"
	"runtime/debug"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// startFamilies starts the families projector and opens the store that
// serves ListFamilies, both sealing and opening with sealer.
func (m *Main) startFamilies(sealer *seal.Sealer) error {
	if m.Config.CacheServiceAddress != "" {
		m.Logger.Warn("CACHE_SERVICE_ADDRESS is set but not used: the token cache is the sealed families read model, the KV bucket "+
			projections.FamilyBucket+" on the NATS cluster", "cache_service_address", m.Config.CacheServiceAddress)
	}
	badEntry := func(key string, err error) {
		m.Logger.Error("a families read model entry does not open (tampered, moved, or sealed under a key tokend no longer has); it is not served, and the projector replaces it from the log at the family's next event, `tokenctl projections rebuild` replaces them all",
			"key", key, "error", err)
	}
	var err error
	m.Projector, err = projections.NewFamilyProjector(m.Log, projections.ProjectorConfig{
		Sealer: sealer, Observer: m.Metrics, OnBadEntry: badEntry,
		// After ENCRYPTION_KEY changed, or with a crypto service (whose
		// envelope may have been turned on or off), entries move to the
		// current key and format, as the keyring's sealed keys do.
		Reseal: len(m.Config.PreviousKeys) > 0 || m.Config.CryptoServiceAddress != "",
		OnResealed: func(n int) {
			m.Logger.Info("families read model re-sealed under the current ENCRYPTION_KEY (or the crypto service's envelope)", "entries", n)
		},
		OnRebuild: func() {
			m.Logger.Warn("the families read model holds values of an earlier release, not sealed: deleting it; the projector rebuilds it sealed from the log, and ListFamilies lists fewer sessions until it has caught up",
				"bucket", projections.FamilyBucket)
		},
		OnBadRecord: func(rec eventlog.Record, err error) {
			m.Metrics.BadRecord("families")
			m.Logger.Error("families projector skipped a record it cannot decode", "seq", rec.Seq, "subject", rec.Subject, "error", err)
		},
		OnError: func(err error) { m.Logger.Warn("families projector: retrying", "error", err) },
	})
	if err != nil {
		return err
	}
	m.Families, err = projections.NewFamilyStore(m.Log.JetStream(), projections.StoreConfig{Sealer: sealer, Observer: m.Metrics, OnBadEntry: badEntry})
	if err != nil {
		return err
	}
	m.group.Go("families projector", m.Projector.Run, nil)
	return nil
}

// forged counts and logs a log record refused as forged (the log calls it
// once per record).
func (m *Main) forged(rec eventlog.Record, err error) {
	m.Metrics.Forged()
	m.refused.add(rec.Seq)
	m.Logger.Error("refused a forged event log record: the service did not write it, or not there; it changes no state. Someone other than tokend can publish to the log",
		"seq", rec.Seq, "subject", rec.Subject, "type", rec.Type, "actor", rec.Actor, "error", err)
}

// catchUpGC raises the GC percentage for the start-up replay and returns
// the function that restores it.
func catchUpGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	prev := debug.SetGCPercent(CatchUpGCPercent)
	return func() { debug.SetGCPercent(prev) }
}
