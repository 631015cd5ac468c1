package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Last returns the last message on filter through a direct get, which any
// replica may answer. It returns ErrNotFound if there is none, and an error
// wrapping ErrForged if that message is not an authentic event that
// follows its aggregate's previous message (see Authenticator).
func (l *Log) Last(ctx context.Context, filter string) (Record, error) {
	return l.last(ctx, filter, false)
}

// LastConsistent returns the last message on filter as the stream leader
// has it: every append acknowledged before the call is visible. Its errors
// are Last's.
func (l *Log) LastConsistent(ctx context.Context, filter string) (Record, error) {
	return l.last(ctx, filter, l.cfg.Replicas > 1)
}

func (l *Log) last(ctx context.Context, filter string, consistent bool) (Record, error) {
	rec, err := l.get(ctx, msgGetRequest{LastFor: filter}, consistent)
	if err != nil {
		return Record{}, err
	}
	if l.cfg.Auth == nil {
		return rec, nil
	}
	if err := l.chained(ctx, rec, filter, consistent); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// Chained checks that rec, an authentic record, is the message of its
// aggregate that follows rec.Prev: an error wrapping ErrForged (reported
// to OnForged) for an authentic event published again, ErrNotFound if rec
// is no longer in the stream. It asks the stream leader.
//
// A reader in stream order checks a record against the one before it in
// its aggregate (Record.Follows); Chained is for the first record it sees
// of an aggregate whose earlier events have left the stream (their TTL,
// EVENT_RETENTION), which then states a Prev the reader never saw.
func (l *Log) Chained(ctx context.Context, rec Record) error {
	return l.chained(ctx, rec, rec.Aggregate, l.cfg.Replicas > 1)
}

func (l *Log) chained(ctx context.Context, rec Record, filter string, consistent bool) error {
	// The chain: the first message of rec's aggregate after rec.Prev
	// must be rec itself. A copy of an old event states the Prev of the
	// original, which still follows it. (filter may span aggregates, such
	// as every family event.) When the messages before rec have expired,
	// rec is still the first after rec.Prev. A copy of an expired event
	// passes only once every later event of its aggregate has expired
	// too (each leaves no earlier than those before it): then what it
	// states is older than the retention and can grant nothing (see
	// family.RetainUntil).
	chain := msgGetRequest{Seq: rec.Prev + 1, NextFor: rec.Aggregate}
	next, err := l.get(ctx, chain, consistent)
	if !consistent && (errors.Is(err, ErrNotFound) || (err == nil && next.Seq > rec.Seq)) {
		// A lagging replica answered: only the leader can tell.
		next, err = l.get(ctx, chain, l.cfg.Replicas > 1)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return ErrNotFound // rec reached its TTL meanwhile
	case err != nil && !errors.Is(err, ErrForged):
		return fmt.Errorf("last %s: chain: %w", filter, err)
	case err != nil || next.Seq != rec.Seq:
		err := fmt.Errorf("last %s: %w: seq %d states that it follows seq %d, but the aggregate's next message after seq %d is seq %d (an event published again)",
			filter, ErrForged, rec.Seq, rec.Prev, rec.Prev, next.Seq)
		l.ReportForged(rec, err)
		return err
	}
	return nil
}

// get reads one message: from the stream leader through the JSON API if
// consistent, else with a direct get that any replica may answer. It
// returns ErrNotFound if there is none and an error wrapping ErrForged
// (reported to OnForged) for a message whose authenticator fails.
func (l *Log) get(ctx context.Context, req msgGetRequest, consistent bool) (Record, error) {
	filter := req.LastFor + req.NextFor
	var m *jetstream.RawStreamMsg
	var err error
	if consistent {
		m, err = l.getMsg(ctx, req)
	} else {
		actx, cancel := context.WithTimeout(ctx, l.cfg.AttemptTimeout)
		if req.LastFor != "" {
			m, err = l.stream.GetLastMsgForSubject(actx, req.LastFor)
		} else {
			m, err = l.stream.GetMsg(actx, req.Seq, jetstream.WithGetMsgSubject(req.NextFor))
		}
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			err = ErrNotFound
		}
	}
	if errors.Is(err, ErrNotFound) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("get %s: %w", filter, err)
	}
	rec, err := l.record(m.Subject, m.Sequence, m.Time, m.Header, m.Data)
	if !consistent {
		if serr := spoofedDirectGet(m); serr != nil {
			err = serr
			// The server's own header comes last.
			seqs := m.Header.Values(jetstream.SequenceHeader)
			rec.Seq, _ = strconv.ParseUint(seqs[len(seqs)-1], 10, 64)
		}
	}
	if err != nil {
		err = fmt.Errorf("get %s: %w", filter, err)
		l.ReportForged(rec, err)
		return Record{}, err
	}
	return rec, nil
}

// msgGetRequest is the body of the stream leader's message-get API.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

// getMsg asks the stream leader for one message. It returns ErrNotFound if
// there is none.
func (l *Log) getMsg(ctx context.Context, mreq msgGetRequest) (*jetstream.RawStreamMsg, error) {
	filter := mreq.LastFor + mreq.NextFor
	req, err := json.Marshal(mreq)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, l.cfg.AttemptTimeout)
		reply, err := l.nc.RequestWithContext(actx, "$JS.API.STREAM.MSG.GET."+l.cfg.Stream, req)
		cancel()
		if err != nil {
			if (errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) && ctx.Err() == nil && attempt < 20 {
				if err := sleepCtx(ctx, backoff(attempt+1)); err != nil {
					return nil, err
				}
				continue
			}
			return nil, fmt.Errorf("message %s: %w", filter, err)
		}
		if err := json.Unmarshal(reply.Data, &resp); err != nil {
			return nil, fmt.Errorf("message %s: decode: %w", filter, err)
		}
		break
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("message %s: %d %s", filter, resp.Error.ErrCode, resp.Error.Description)
	}
	if resp.Message == nil {
		return nil, fmt.Errorf("message %s: empty response", filter)
	}
	var hdr nats.Header
	if len(resp.Message.Header) > 0 {
		hdr, err = nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return nil, fmt.Errorf("message %s: headers: %w", filter, err)
		}
	}
	m := resp.Message
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Time: m.Time, Header: hdr, Data: m.Data}, nil
}

// LastSeq returns the sequence of the last message in the stream.
func (l *Log) LastSeq(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// Identity returns when the stream was created and the sequence of its
// last message: a position is only meaningful in the stream it was read
// from, and a stream deleted and created again starts over.
func (l *Log) Identity(ctx context.Context) (created time.Time, lastSeq uint64, err error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("stream info: %w", err)
	}
	return info.Created, info.State.LastSeq, nil
}

// record returns the record of a stored message, and an error wrapping
// ErrForged (with the record, for the report) if its authenticator fails.
// Without Auth the record's Prev is read from its authenticator unchecked.
func (l *Log) record(subject string, seq uint64, t time.Time, h nats.Header, data []byte) (Record, error) {
	in := inputOf(subject, h, data, 0) // the headers are read once, for the record and its MAC
	r := Record{Subject: subject, Seq: seq, Time: t, Data: data,
		Type: in.typ, ID: in.id, CorrelationID: in.correlation, Actor: in.actor, Aggregate: in.aggregate}
	if in.ttl != "" {
		if ttl, err := time.ParseDuration(in.ttl); err == nil && ttl > 0 {
			r.TTL = ttl
		}
	}
	auth := h.Get(HeaderAuth)
	if l.cfg.Auth == nil {
		if _, prev, _, err := parseAuth(auth); err == nil {
			r.Prev = prev
		}
		return r, nil
	}
	prev, err := l.cfg.Auth.check(auth, seq, in)
	if err != nil {
		return r, fmt.Errorf("seq %d: %w", seq, err)
	}
	r.Prev = prev
	return r, nil
}

// spoofedDirectGet reports a message whose stored headers name a sequence,
// subject, time or stream of their own: a direct get answers with these
// headers added to the stored ones, and a client reads the first, so a
// published message could pass for another sequence (and so another place
// in its aggregate). The service never writes them.
func spoofedDirectGet(m *jetstream.RawStreamMsg) error {
	for _, h := range []string{jetstream.SequenceHeader, jetstream.SubjectHeader, jetstream.TimeStampHeaer, jetstream.StreamHeader} {
		if len(m.Header.Values(h)) > 1 {
			return fmt.Errorf("%w: the message carries its own %s header", ErrForged, h)
		}
	}
	return nil
}

// ReportForged tells OnForged of rec and err, once per sequence. Readers
// that find a record forged by its place in its aggregate (Follows) report
// it here too, so each forged record is counted and logged once.
func (l *Log) ReportForged(rec Record, err error) {
	if l.cfg.OnForged == nil || !l.forged.first(rec.Seq) {
		return
	}
	l.cfg.OnForged(rec, err)
}

// reported remembers the sequences of the forged records reported, up to
// maxReported (then it forgets them all: a flood is still counted, its log
// lines repeat at most once per maxReported).
type reported struct {
	mu   sync.Mutex
	seen map[uint64]struct{}
}

const maxReported = 4096

func (r *reported) first(seq uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.seen[seq]; ok {
		return false
	}
	if len(r.seen) >= maxReported {
		clear(r.seen)
	}
	r.seen[seq] = struct{}{}
	return true
}
