package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// RevocationFeed serves watches of the log's revocations to the token
// service itself (WatchRevocations) and to operators, who may read the
// log; resource servers read the subscriber feed instead. Sequences are
// the log's.
type RevocationFeed struct{ Log *eventlog.Log }

// WatchRevocations calls fn with every revocation after log sequence after
// (0: after the log's last sequence now, exactly) until ctx ends or fn
// fails; subscribed is called once the revocations that existed at the
// start were delivered.
func (f RevocationFeed) WatchRevocations(ctx context.Context, after uint64, subscribed func(), fn func(subscriber.Revocation) error) error {
	if after == 0 {
		last, err := f.Log.LastSeq(ctx)
		if err != nil {
			return err
		}
		after = last
	}
	return WatchRevocations(ctx, f.Log, after, time.Time{}, subscribed, fn)
}

// WatchRevocations calls fn with every revocation of log after sequence
// after, skipping those appended before since (if set), in log order,
// through eventlog's Follow, until ctx ends (it returns ctx's error) or fn
// returns an error (which it returns). caughtUp, if set, is called once
// the revocations that existed at the start were delivered.
func WatchRevocations(ctx context.Context, log *eventlog.Log, after uint64, since time.Time, caughtUp func(), fn func(subscriber.Revocation) error) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var fnErr error
	s := log.Subjects()
	filters := []string{s.Prefix() + ".family.*.revoked", s.Prefix() + ".subject.*.revoked"}
	err := log.Follow(wctx, after+1, filters, func(rec eventlog.Record) {
		if fnErr != nil || (!since.IsZero() && rec.Time.Before(since)) {
			return
		}
		r, ok := RevocationOf(rec)
		if !ok {
			return
		}
		if fnErr = fn(r); fnErr != nil {
			cancel()
		}
	}, caughtUp)
	if fnErr != nil {
		return fnErr
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("watch revocations: %w", err)
	}
	return err
}

// RevocationOf returns the revocation a log record holds; ok is false for
// a record that is not one, or does not decode.
func RevocationOf(rec eventlog.Record) (r subscriber.Revocation, ok bool) {
	m, err := events.Decode(rec)
	if err != nil {
		return r, false
	}
	r = subscriber.Revocation{Seq: rec.Seq, SourceSeq: rec.Seq, AppendedAt: rec.Time}
	switch e := m.(type) {
	case *eventsv1.FamilyRevoked:
		st := e.GetState()
		r.FamilyID, r.Subject = st.GetFamilyId(), st.GetSubject()
		r.Reason = events.ReasonName(e.GetReason())
		r.RevokedAt, r.AccessExpiresAt = st.GetRevokedAt().AsTime(), st.GetAccessExpiresAt().AsTime()
	case *eventsv1.SubjectRevoked:
		r.Subject, r.Reason, r.RevokedAt = e.GetSubject(), events.ReasonName(e.GetReason()), e.GetRevokedAt().AsTime()
	default:
		return r, false
	}
	return r, true
}
