package keyring

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing/breaker"
)

// fallbackAppendTimeout bounds the append of one fallback_engaged event.
const fallbackAppendTimeout = 10 * time.Second

// breakerObserver asks Run to record, once per outage, that this replica
// engaged the fallback key, and passes every observation on.
type breakerObserver struct {
	k    *Keyring
	next breaker.Observer
}

func (o breakerObserver) Call(op, status string, d time.Duration) {
	if o.next != nil {
		o.next.Call(op, status, d)
	}
}

func (o breakerObserver) StateChanged(open bool) {
	if o.next != nil {
		o.next.StateChanged(open)
	}
	if !open {
		o.k.engaged.Store(false)
		return
	}
	if o.k.cfg.Fallback && o.k.engaged.CompareAndSwap(false, true) {
		select {
		case o.k.fellBack <- struct{}{}:
		default: // one is waiting for Run already
		}
	}
}

// Run records a fallback_engaged event each time a remote backend's
// breaker opens and the fallback key takes over (once per outage), until
// ctx ends; it returns ctx's error. Without Run the fallback key still
// signs, but the log does not record it. An event that cannot be appended
// is reported to Config.OnError and not tried again in that outage: the
// fallback metric counts it anyway. Run it once, for as long as the
// keyring signs.
func (k *Keyring) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-k.fellBack:
		}
		if err := k.recordFallback(ctx); err != nil && ctx.Err() == nil && k.cfg.OnError != nil {
			k.cfg.OnError(fmt.Errorf("keyring: record fallback_engaged: %w", err))
		}
	}
}

// recordFallback appends fallback_engaged for the fallback key.
func (k *Keyring) recordFallback(ctx context.Context) error {
	fb, ok := k.Fallback()
	if !ok {
		return nil // no fallback key published: nothing signs in its place
	}
	primary, _ := k.set.ActiveKey() // none active: the event names no primary
	ctx, cancel := context.WithTimeout(ctx, fallbackAppendTimeout)
	defer cancel()
	ev, err := events.Key(k.log.Subjects(), fb.KeyID(), &eventsv1.KeyFallbackEngaged{KeyId: fb.KeyID(), PrimaryKeyId: primary.ID,
		At: timestamppb.New(k.cfg.Now()), Reason: "breaker_open"})
	if err != nil {
		return err
	}
	// It records a fact: appended after whatever key event is last, like
	// every key event (compare-and-set on the keys aggregate).
	if _, err := k.log.AppendNext(ctx, ev, k.log.Subjects().Keys()); err != nil {
		return fmt.Errorf("key %s: %w", fb.KeyID(), err)
	}
	return nil
}
