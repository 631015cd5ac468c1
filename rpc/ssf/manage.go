package ssf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// createStream creates a stream owned by c (SSF 1.0 §8.1.1.1): delivery
// defaults to poll, aud to the caller's identity. Errors:
// ErrInvalidRequest, ErrTooManyStreams.
func (s *Service) createStream(ctx context.Context, c Caller, req StreamRequest) (*record, error) {
	if n, err := s.owned(ctx, c.Owner); err != nil {
		return nil, err
	} else if n >= s.cfg.MaxStreams {
		return nil, fmt.Errorf("%w: a receiver has at most %d", ErrTooManyStreams, s.cfg.MaxStreams)
	}
	id, err := s.newID()
	if err != nil {
		return nil, err
	}
	after, err := s.log.LastSeq(ctx)
	if err != nil {
		return nil, err
	}
	iss := c.Issuer
	if iss == "" {
		iss = s.cfg.Issuer
	}
	if iss == "" {
		return nil, ErrNoPublicURL
	}
	base := record{ID: id, Owner: c.Owner, Status: StatusEnabled, Aud: []string{defaultAudience(c)}, Iss: iss, Restrict: slices.Clone(c.Audiences),
		Delivery: Delivery{Method: MethodPoll}, AfterSeq: after, CreatedAt: s.cfg.Now().UTC()}
	if req.Delivery == nil {
		req.Delivery = &Delivery{Method: MethodPoll}
	}
	r, err := s.cfg.PushURLs.apply(base, req, c, false)
	if err != nil {
		return nil, err
	}
	if err := s.store.create(ctx, &r); err != nil {
		return nil, err
	}
	// Counted again once written: of two creates that raced past the
	// first count, neither stands if together they exceed the limit.
	if n, err := s.owned(ctx, c.Owner); err != nil || n > s.cfg.MaxStreams {
		if _, rev, gerr := s.store.get(ctx, r.ID); gerr == nil {
			_ = s.store.delete(ctx, r.ID, rev) // a failure leaves one stream too many, no more
		}
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: a receiver has at most %d", ErrTooManyStreams, s.cfg.MaxStreams)
	}
	return &r, nil
}

// owned counts the streams of owner.
func (s *Service) owned(ctx context.Context, owner string) (int, error) {
	all, err := s.store.snapshot(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range all {
		if r.Owner == owner {
			n++
		}
	}
	return n, nil
}

// stream returns stream id if c may see it. Errors: ErrStreamNotFound.
func (s *Service) stream(ctx context.Context, c Caller, id string) (*record, error) {
	r, _, err := s.store.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !visibleTo(r, c) {
		return nil, ErrStreamNotFound
	}
	return r, nil
}

// streams returns the streams c may see.
func (s *Service) streams(ctx context.Context, c Caller) ([]*record, error) {
	all, err := s.store.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(r *record) bool { return !visibleTo(r, c) }), nil
}

// updateStream changes the members req names (PATCH, §8.1.1.3), or
// replaces every receiver-supplied member (PUT, §8.1.1.4). Errors:
// ErrStreamNotFound, ErrInvalidRequest, ErrConflict.
func (s *Service) updateStream(ctx context.Context, c Caller, req StreamRequest, replace bool) (*record, error) {
	var was Delivery
	r, err := s.store.update(ctx, req.StreamID, func(r *record) error {
		if !visibleTo(r, c) {
			return ErrStreamNotFound
		}
		was = r.Delivery
		n, err := s.cfg.PushURLs.apply(*r, req, c, replace)
		if err != nil {
			return err
		}
		*r = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	if was.Method == MethodPush && r.Delivery.Method != MethodPush {
		s.deletePushConsumer(ctx, r.ID) // poll reads the queue itself
	}
	return r, nil
}

// deleteStream deletes stream id and its queued SETs (§8.1.1.5). Errors:
// ErrStreamNotFound, ErrConflict.
func (s *Service) deleteStream(ctx context.Context, c Caller, id string) error {
	r, rev, err := s.store.get(ctx, id)
	if err != nil {
		return err
	}
	if !visibleTo(r, c) {
		return ErrStreamNotFound
	}
	if err := s.store.delete(ctx, id, rev); err != nil {
		return err
	}
	s.deletePushConsumer(ctx, id)
	return s.queue.drop(ctx, id)
}

func (s *Service) deletePushConsumer(ctx context.Context, id string) {
	err := s.log.JetStream().DeleteConsumer(ctx, s.cfg.Queue, pushConsumer(id))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.cfg.Logger.Warn("ssf: deleting a push consumer", "stream_id", id, "error", err)
	}
}

// setStatus sets the status of stream id (§8.1.2.2): a paused stream
// holds its SETs, a disabled one drops them and makes no more. Errors:
// ErrStreamNotFound, ErrInvalidRequest, ErrConflict.
func (s *Service) setStatus(ctx context.Context, c Caller, id, status, reason string) (*record, error) {
	if err := checkStatus(status, reason); err != nil {
		return nil, err
	}
	// A stream enabled again after it was disabled receives the events
	// after this point, not those appended while it was disabled that
	// the materializer has yet to handle.
	end, err := s.log.LastSeq(ctx)
	if err != nil {
		return nil, err
	}
	r, err := s.store.update(ctx, id, func(r *record) error {
		if !visibleTo(r, c) {
			return ErrStreamNotFound
		}
		if r.Status == StatusDisabled && status != StatusDisabled {
			r.AfterSeq = max(r.AfterSeq, end)
		}
		r.Status, r.Reason = status, reason
		return nil
	})
	if err != nil {
		return nil, err
	}
	if status == StatusDisabled {
		if err := s.queue.drop(ctx, id); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// setSubject removes a subject from stream id (remove: its events are
// no longer sent) or adds it (§8.1.3): back if it was removed, and into
// the stream's added subjects (at most maxAdded), which a restricted
// stream needs for subject-wide events (entitled). An unrestricted stream
// receives every subject otherwise (default_subjects ALL). Errors:
// ErrStreamNotFound, ErrInvalidRequest, ErrConflict.
func (s *Service) setSubject(ctx context.Context, c Caller, id string, subject json.RawMessage, remove bool) error {
	keys, err := keysOf(subject, s.cfg.TokenIssuer)
	if err != nil {
		return err
	}
	_, err = s.store.update(ctx, id, func(r *record) error {
		if !visibleTo(r, c) {
			return ErrStreamNotFound
		}
		r.Excluded = slices.DeleteFunc(r.Excluded, func(k string) bool { return slices.Contains(keys, k) })
		r.Added = slices.DeleteFunc(r.Added, func(k string) bool { return slices.Contains(keys, k) })
		if remove {
			if len(r.Excluded)+len(keys) > maxExcluded {
				return fmt.Errorf("%w: at most %d removed subjects per stream", ErrInvalidRequest, maxExcluded)
			}
			r.Excluded = append(r.Excluded, keys...)
			return nil
		}
		if len(r.Added)+len(keys) > maxAdded {
			return fmt.Errorf("%w: at most %d added subjects per stream", ErrInvalidRequest, maxAdded)
		}
		r.Added = append(r.Added, keys...)
		return nil
	})
	return err
}

// verify queues a verification event for stream id with state (§8.1.4.2).
// Errors: ErrStreamNotFound, ErrInvalidRequest, ErrTooSoon,
// ErrStreamDisabled, ErrConflict.
func (s *Service) verify(ctx context.Context, c Caller, id, state string) error {
	if err := checkText("state", state, maxState); err != nil {
		return err
	}
	now := s.cfg.Now()
	r, err := s.store.update(ctx, id, func(r *record) error {
		switch {
		case !visibleTo(r, c):
			return ErrStreamNotFound
		case !holds(r):
			return ErrStreamDisabled
		case !r.VerifiedAt.IsZero() && now.Sub(r.VerifiedAt) < minVerificationInterval:
			return fmt.Errorf("%w: at most one per %s", ErrTooSoon, minVerificationInterval)
		}
		r.VerifiedAt = now
		return nil
	})
	if err != nil {
		return err
	}
	nonce, err := s.newID()
	if err != nil {
		return err
	}
	body := map[string]any{}
	if state != "" {
		body["state"] = state
	}
	sig := &signal{Type: EventVerification, Subject: &Subject{Format: "opaque", ID: id}, Body: body}
	return s.enqueue(ctx, r, sig, jtiOf(id, 0, nonce))
}
