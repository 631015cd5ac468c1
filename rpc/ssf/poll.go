package ssf

import (
	"context"
	"fmt"
	"time"
)

// Bounds of a poll (RFC 8936).
const (
	maxPollEvents  = 256
	maxPollAcks    = 1024
	maxLongPoll    = 10 * time.Second
	defPollEvents  = 100
	maxSetErrsDesc = 256
	// longPollRecheck is how often a long poll reads the queue besides
	// its wake-ups.
	longPollRecheck = 200 * time.Millisecond
)

// PollRequest is an RFC 8936 §2.4 poll.
type PollRequest struct {
	MaxEvents         *int                `json:"maxEvents"`
	ReturnImmediately bool                `json:"returnImmediately"`
	Ack               []string            `json:"ack"`
	SetErrs           map[string]SetError `json:"setErrs"`
}

// SetError is a receiver's report of a SET it could not accept.
type SetError struct {
	Err         string `json:"err"`
	Description string `json:"description"`
}

// PollResponse is an RFC 8936 §2.5 response.
type PollResponse struct {
	Sets          map[string]string `json:"sets"`
	MoreAvailable bool              `json:"moreAvailable,omitempty"`
}

// poll acknowledges what req acknowledges (and drops the SETs it reports
// as errors), then returns the queued SETs of stream id, oldest first, up
// to maxEvents (default 100, at most 256); without returnImmediately it
// waits up to 10 s (bounded by ctx) for one. A paused stream returns none.
// Errors: ErrStreamNotFound, ErrInvalidRequest.
func (s *Service) poll(ctx context.Context, c Caller, id string, req PollRequest) (PollResponse, error) {
	max := defPollEvents
	if req.MaxEvents != nil {
		max = *req.MaxEvents
	}
	if max < 0 || max > maxPollEvents {
		return PollResponse{}, fmt.Errorf("%w: maxEvents must be 0 to %d", ErrInvalidRequest, maxPollEvents)
	}
	if len(req.Ack)+len(req.SetErrs) > maxPollAcks {
		return PollResponse{}, fmt.Errorf("%w: at most %d ack and setErrs", ErrInvalidRequest, maxPollAcks)
	}
	for jti, e := range req.SetErrs {
		if err := checkText("setErrs", e.Err+e.Description+jti, maxSetErrsDesc); err != nil {
			return PollResponse{}, err
		}
	}
	r, err := s.stream(ctx, c, id)
	if err != nil {
		return PollResponse{}, err
	}
	if r.Delivery.Method != MethodPoll {
		return PollResponse{}, fmt.Errorf("%w: the stream's delivery method is push", ErrInvalidRequest)
	}
	now := s.cfg.Now()
	for _, jti := range req.Ack {
		made, err := s.queue.remove(ctx, id, jti)
		if err != nil {
			return PollResponse{}, err
		}
		if !made.IsZero() {
			s.metrics.delivery("poll", OutcomeDelivered, made, now)
		}
	}
	for jti, e := range req.SetErrs {
		if _, err := s.queue.remove(ctx, id, jti); err != nil {
			return PollResponse{}, err
		}
		s.cfg.Logger.Warn("ssf: the receiver refused a SET", "stream_id", id, "jti", jti, "err", e.Err, "description", e.Description)
		s.metrics.delivery("poll", OutcomeRejected, time.Time{}, now)
	}
	resp := PollResponse{Sets: map[string]string{}}
	if max == 0 || !transmits(r) {
		return resp, nil
	}
	var wake <-chan struct{}
	if !req.ReturnImmediately {
		ch, stop, err := s.queue.wait(id)
		if err != nil {
			return PollResponse{}, err
		}
		defer stop()
		wake = ch
	}
	deadline := time.NewTimer(maxLongPoll)
	defer deadline.Stop()
	// The wake-up is a SET's publish as core NATS delivers it, which can
	// come before the stream has stored it (read again, soon), or before
	// this poll subscribed while the stream stores it after the first read
	// (no wake-up at all): the queue is also read every longPollRecheck.
	recheck := time.NewTicker(longPollRecheck)
	defer recheck.Stop()
	var retry <-chan time.Time
	pause := time.Millisecond
	for {
		sets, more, err := s.queue.read(ctx, id, max)
		if err != nil {
			return PollResponse{}, err
		}
		if len(sets) > 0 || wake == nil {
			for _, q := range sets {
				set, err := resign(ctx, s.cfg.Published, s.cfg.Keys, q.SET)
				if err != nil {
					return PollResponse{}, err
				}
				resp.Sets[q.JTI] = set
			}
			resp.MoreAvailable = more
			return resp, nil
		}
		select {
		case <-wake:
			pause = time.Millisecond
			retry = time.After(pause)
			continue
		case <-retry:
			if pause < longPollRecheck {
				pause *= 2
				retry = time.After(pause)
			} else {
				retry = nil
			}
			continue
		case <-recheck.C:
			continue
		case <-deadline.C:
			return resp, nil
		case <-ctx.Done():
			return resp, nil
		}
	}
}
