package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// A rotation of ENCRYPTION_KEY changes the key of the log's MACs. While
// ENCRYPTION_KEY_PREVIOUS lists the old key, records under it verify; a
// replica that starts so, once it has read (and so verified) the whole log,
// appends a token.log.rekeyed checkpoint under the new key that vouches for
// every record up to there, listing those it refused. Every replica reads
// the last checkpoint before it reads the log (eventlog.Authenticator.Vouch),
// so the old key can then be dropped without losing the log.

// refusedSeqs remembers the sequences of the records refused as forged,
// for the next checkpoint.
type refusedSeqs struct {
	mu   sync.Mutex
	seqs []uint64
}

// maxRefused bounds what a checkpoint lists; past it, tokend refuses to
// write one (an attack that size needs an operator first).
const maxRefused = 100_000

func (r *refusedSeqs) add(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seqs) <= maxRefused {
		r.seqs = append(r.seqs, seq)
	}
}

func (r *refusedSeqs) upTo(through uint64, previous []uint64) ([]uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seqs) > maxRefused {
		return nil, fmt.Errorf("more than %d forged records refused: not vouching for the log", maxRefused)
	}
	out := slices.Clone(previous)
	for _, s := range r.seqs {
		if s <= through {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// readRekeyCheckpoint makes the log's authenticator vouch for what the last
// checkpoint vouches for (before the projections read the log).
func (m *Main) readRekeyCheckpoint(ctx context.Context, auth *eventlog.Authenticator) (*eventsv1.LogRekeyed, error) {
	rec, err := m.Log.LastConsistent(ctx, m.Log.Subjects().LogRekeyed())
	if errors.Is(err, eventlog.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the last ENCRYPTION_KEY rotation checkpoint: %w", err)
	}
	var cp eventsv1.LogRekeyed
	if err := proto.Unmarshal(rec.Data, &cp); err != nil {
		return nil, fmt.Errorf("ENCRYPTION_KEY rotation checkpoint at seq %d: %w", rec.Seq, err)
	}
	auth.Vouch(cp.GetVerifiedThrough(), cp.GetRefused())
	return &cp, nil
}

// writeRekeyCheckpoint appends a checkpoint for every record the
// projections have read, under the current key.
func (m *Main) writeRekeyCheckpoint(ctx context.Context, auth *eventlog.Authenticator, last *eventsv1.LogRekeyed) error {
	through := m.Set.Seq()
	refused, err := m.refused.upTo(through, last.GetRefused())
	if err != nil {
		return err
	}
	ev, err := events.LogRekeyed(m.Log.Subjects(), &eventsv1.LogRekeyed{VerifiedThrough: through, Refused: refused, KeyId: auth.KeyID(), At: timestamppb.Now()})
	if err != nil {
		return err
	}
	if _, err := m.Log.AppendNext(ctx, ev, ev.Subject); err != nil {
		return err
	}
	m.Logger.Info("ENCRYPTION_KEY rotation: the log is vouched for under the new key; ENCRYPTION_KEY_PREVIOUS can be dropped once every replica has restarted with the new key",
		"verified_through", through, "refused", len(refused))
	return nil
}
