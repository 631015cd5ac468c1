package app

import (
	"context"
	"errors"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// loadCheckpoint restores the in-memory projections from their newest
// checkpoint, if checkpoints are on, so that the runner replays only the
// tail of the log; any checkpoint it cannot use means a full replay, which
// is logged and counted, never an error.
func (m *Main) loadCheckpoint(ctx context.Context, sealer *seal.Sealer) error {
	m.Metrics.ObserveHeld(func() float64 { return float64(m.Set.Len()) })
	if m.Config.CheckpointInterval <= 0 {
		return nil
	}
	var err error
	m.Checkpoints, err = projections.NewCheckpoints(m.Log, m.Set, projections.CheckpointConfig{
		Sealer: sealer, Interval: m.Config.CheckpointInterval, Tick: m.tick,
		OnLoad: func(outcome string, seq uint64, err error) {
			m.Metrics.CheckpointLoaded(outcome)
			switch {
			case outcome == projections.LoadRestored:
				m.Logger.Info("projections restored from their checkpoint; replaying the log after it", "seq", seq)
			case outcome == projections.LoadMissing:
				m.Logger.Info("no projections checkpoint yet; replaying the whole log")
			default:
				m.Logger.Warn("projections checkpoint not used; replaying the whole log", "outcome", outcome, "error", err)
			}
		},
		OnSave: func(seq uint64, size int, took time.Duration, err error) {
			m.Metrics.CheckpointSaved(err)
			if err != nil {
				m.Logger.Warn("projections checkpoint: retrying at the next interval", "error", err)
				return
			}
			m.Logger.Debug("projections checkpoint written", "seq", seq, "bytes", size, "took", took.String())
		},
	})
	if err != nil {
		return err
	}
	start := time.Now()
	m.Checkpoints.Load(ctx)
	m.Logger.Debug("projections checkpoint loaded", "took", time.Since(start).String(), "entries", m.Set.Len())
	return nil
}

// tick appends a tick (events.LogTick) after the previous one; when
// another replica ticked first, that one does.
func (m *Main) tick(ctx context.Context) error {
	ev, err := events.LogTick(m.Log.Subjects(), time.Now())
	if err != nil {
		return err
	}
	ev.TTL = m.Config.EventRetention // a tick is kept as long as the events it let the replicas forget
	if _, err := m.Log.AppendNext(ctx, ev, ev.Subject); err != nil && !errors.Is(err, eventlog.ErrConflict) {
		return err
	}
	return nil
}
