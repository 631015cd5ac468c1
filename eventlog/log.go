package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config configures a Log. The zero value of every field but Conn selects
// the documented default.
type Config struct {
	// Stream is the stream name. Default DefaultStream (TOKENS).
	Stream string
	// Prefix is the subject prefix. Default DefaultPrefix (token); the
	// stream holds Prefix.>.
	Prefix string
	// Replicas is the stream's replica count. Default 1.
	Replicas int
	// DuplicateWindow is the window in which a repeated Nats-Msg-Id is
	// recognised. Default 2 minutes.
	DuplicateWindow time.Duration
	// AttemptTimeout bounds one publish or read round trip. Default 5 s.
	AttemptTimeout time.Duration
	// MaxPayload bounds an event's payload. Default 256 KiB.
	MaxPayload int
	// NewID returns a unique message ID. Default nuid.
	NewID func() string
	// Observer, if set, is told the latency and outcome of every append.
	Observer Observer
	// Auth authenticates every appended event and checks every record
	// read (see Authenticator). Required by Open; a Log made by Attach
	// without it reads records unchecked (an operator tool without the
	// service's key).
	Auth *Authenticator
	// OnForged, if set, is told once per record (by sequence, for as long
	// as this Log lives) of every record a read refused with ErrForged.
	// It must not block.
	OnForged func(Record, error)
	// OnReadError, if set, is told of every error a read (Follow, Replay)
	// recovers from by itself: missed heartbeats while a stream leader
	// moves, a failed status query. Reads go on either way; it lets the
	// owner count or log them. It must not block. Default: none.
	OnReadError func(error)
	// Tracer, if set, records a span around every Append. Its attributes
	// are the event type, the outcome and the sequence; never the subject, which holds IDs. Default: a
	// no-op tracer.
	Tracer trace.Tracer
}

// Observer receives append measurements. Implementations must be safe for
// concurrent use.
type Observer interface {
	// AppendDone reports one Append: its duration and its error (nil,
	// ErrConflict, or another).
	AppendDone(d time.Duration, err error)
}

// Event is a message to append.
type Event struct {
	// Subject is the full subject, built with Subjects.
	Subject string
	// Type is the event type, stored in the Token-Event header.
	Type string
	// ID is the Nats-Msg-Id. If empty, Append generates one.
	ID string
	// Data is the payload (a protobuf message from proto/token/events).
	Data []byte
	// TTL, if positive, sets a per-message time to live (Nats-TTL).
	TTL time.Duration
}

// Expect is an optimistic-concurrency expectation. The zero value appends
// unconditionally.
type Expect struct {
	// Filter is the aggregate's filter subject.
	Filter string
	// Seq is the sequence of the last message on Filter the writer saw, 0
	// for "no message yet".
	Seq uint64
}

// Record is a message read back from the log.
type Record struct {
	Subject       string
	Seq           uint64
	Time          time.Time
	Type          string
	ID            string
	CorrelationID string
	Actor         string
	Data          []byte
	// Aggregate is the filter of the event's aggregate and Prev the
	// sequence of the aggregate's message this event follows: the
	// compare-and-set expectation it was appended with, which its
	// authenticator binds.
	Aggregate string
	Prev      uint64
	// TTL is the message's time to live (Nats-TTL) from Time, 0 for none:
	// it leaves the stream at Time + TTL.
	TTL time.Duration
	// Pending is, for records delivered by Follow and Replay, how many
	// records on the reader's filters followed this one when it was
	// delivered.
	Pending uint64
}

// Log is the event log over one JetStream stream. It is safe for concurrent
// use.
type Log struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   jetstream.Stream
	cfg      Config
	subjects Subjects
	forged   *reported
}

func (c *Config) setDefaults() {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = 5 * time.Second
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = 256 << 10
	}
	if c.NewID == nil {
		c.NewID = nuid.Next
	}
	if c.Tracer == nil {
		c.Tracer = noop.NewTracerProvider().Tracer("")
	}
}

// Open creates the stream or updates its configuration and returns a Log
// over it. nc stays owned by the caller.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Log, error) {
	cfg.setDefaults()
	if cfg.Auth == nil {
		return nil, errors.New("eventlog: Config.Auth is required: every event the service appends is authenticated")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("eventlog: jetstream: %w", err)
	}
	sc := jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "token service event log",
		Subjects:    []string{cfg.Prefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		AllowDirect: true,
		AllowMsgTTL: true,
		// No MaxAge: the log is the system of record, and key events must
		// stay. Only messages appended with a TTL leave: family and subject
		// events after EVENT_RETENTION, grace records, DPoP claims.
		MaxAge:       0,
		MaxMsgSize:   int32(cfg.MaxPayload + 4096),
		DenyDelete:   true,
		DenyPurge:    false, // tokenctl may compact in a later version.
		AllowRollup:  false,
		MaxConsumers: -1,
	}
	var stream jetstream.Stream
	err = Provision(ctx, cfg.AttemptTimeout, func(ctx context.Context) (err error) {
		stream, err = openStream(ctx, js, sc)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("eventlog: create stream %s: %w", cfg.Stream, err)
	}
	return newLog(nc, js, stream, cfg), nil
}

func newLog(nc *nats.Conn, js jetstream.JetStream, stream jetstream.Stream, cfg Config) *Log {
	return &Log{nc: nc, js: js, stream: stream, cfg: cfg, subjects: NewSubjects(cfg.Prefix), forged: &reported{seen: map[uint64]struct{}{}}}
}

// openStream returns the stream of sc, creating it, or updating it only if
// its configuration differs: every replica opens the log at start, and an
// update that changes nothing still rewrites the store's configuration on
// the server, concurrently with the consumers other replicas create (a
// data race inside nats-server 2.15.2 that the race detector reports).
func openStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, sc.Name)
	if err == nil {
		if info := s.CachedInfo(); info != nil && sameStreamConfig(info.Config, sc) {
			return s, nil
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, err
	}
	return js.CreateOrUpdateStream(ctx, sc)
}

// sameStreamConfig compares the fields Open sets.
func sameStreamConfig(have, want jetstream.StreamConfig) bool {
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Storage == want.Storage && have.Retention == want.Retention && have.Discard == want.Discard &&
		have.Replicas == want.Replicas && have.Duplicates == want.Duplicates &&
		have.AllowDirect == want.AllowDirect && have.AllowMsgTTL == want.AllowMsgTTL &&
		have.MaxAge == want.MaxAge && have.MaxMsgSize == want.MaxMsgSize &&
		have.DenyDelete == want.DenyDelete && have.DenyPurge == want.DenyPurge &&
		have.AllowRollup == want.AllowRollup && have.MaxConsumers == want.MaxConsumers
}

// Subjects returns the subject scheme of the log.
func (l *Log) Subjects() Subjects { return l.subjects }

// Stream returns the stream name.
func (l *Log) Stream() string { return l.cfg.Stream }

// Append writes ev if exp holds and returns its stream sequence. Every
// append is conditional (exp.Filter names ev's aggregate) and carries the
// authenticator of ev under Config.Auth.
//
// It returns ErrConflict if the aggregate changed, ErrInvalidEvent for an
// event the log refuses, and ErrAmbiguous (wrapping the cause) if the
// outcome could not be learned before ctx ended. The correlation ID and
// actor of ctx are stamped on the message.
func (l *Log) Append(ctx context.Context, ev Event, exp Expect) (seq uint64, err error) {
	if obs := l.cfg.Observer; obs != nil {
		start := time.Now()
		defer func() { obs.AppendDone(time.Since(start), err) }()
	}
	ctx, span := l.cfg.Tracer.Start(ctx, "eventlog.Append", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", l.cfg.Stream),
			attribute.String("eventlog.event_type", ev.Type),
		))
	defer func() { endAppendSpan(span, seq, err) }()
	if err := l.checkEvent(ev, exp); err != nil {
		return 0, err
	}
	if ev.ID == "" {
		ev.ID = l.cfg.NewID()
	}
	// At most eight headers, their values in one allocation: an append is
	// on the path of every token request.
	h := make(nats.Header, 8)
	vals := make([]string, 0, 8)
	set := func(key, value string) {
		vals = append(vals, value)
		h[key] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set(HeaderMsgID, ev.ID)
	if ev.Type != "" {
		set(HeaderEvent, ev.Type)
	}
	if id := CorrelationID(ctx); id != "" {
		set(HeaderCorrelationID, id)
	}
	if a := Actor(ctx); a != "" {
		set(HeaderActor, a)
	}
	if ev.TTL > 0 {
		// Whole seconds: the server rounds sub-second TTLs anyway.
		secs := int64((ev.TTL + time.Second - 1) / time.Second)
		set(HeaderTTL, strconv.FormatInt(secs, 10)+"s")
	}
	set(jetstream.ExpectedLastSubjSeqSubjHeader, exp.Filter)
	set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(exp.Seq, 10))
	set(HeaderAuth, l.cfg.Auth.sign(inputOf(ev.Subject, h, ev.Data, exp.Seq)))
	msg := &nats.Msg{Subject: ev.Subject, Data: ev.Data, Header: h}

	ambiguous := false
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt == maxAttempts {
			if ambiguous {
				return 0, fmt.Errorf("%w: append %s: %v", ErrAmbiguous, ev.Subject, lastErr)
			}
			return 0, fmt.Errorf("append %s: %w", ev.Subject, lastErr)
		}
		if attempt > 0 {
			if err := sleepCtx(ctx, backoff(attempt)); err != nil {
				return 0, fmt.Errorf("%w: append %s: %v", ErrAmbiguous, ev.Subject, lastErr)
			}
		}
		actx, cancel := context.WithTimeout(ctx, l.cfg.AttemptTimeout)
		ack, err := l.js.PublishMsg(actx, msg)
		cancel()
		switch {
		case err == nil:
			if ack.Duplicate {
				// Cluster answer to a retried CAS append; the
				// original may or may not be ours under this ID
				// (IDs are unique), so it is: confirm by reading.
				return l.resolve(ctx, ev, exp)
			}
			return ack.Sequence, nil
		case isConflict(err):
			if ambiguous {
				return l.resolve(ctx, ev, exp)
			}
			return 0, fmt.Errorf("append %s: %w", ev.Subject, ErrConflict)
		case isAmbiguous(err):
			ambiguous = true
			lastErr = err
			if ctx.Err() != nil {
				return 0, fmt.Errorf("%w: append %s: %v", ErrAmbiguous, ev.Subject, err)
			}
		case isRetryable(err):
			// Not delivered (no responders while a leader is elected).
			lastErr = err
			if ctx.Err() != nil {
				if ambiguous {
					return 0, fmt.Errorf("%w: append %s: %v", ErrAmbiguous, ev.Subject, err)
				}
				return 0, fmt.Errorf("append %s: %w", ev.Subject, err)
			}
		default:
			return 0, fmt.Errorf("append %s: %w", ev.Subject, err)
		}
	}
}

// AppendNext appends ev after whatever the last message on filter (ev's
// aggregate) is, with compare-and-set on it, and reads again when another
// writer wins, up to maxAttempts times: for an event that records a fact
// rather than a decision taken from the aggregate's state (a subject's
// cut-off, a fallback engaged, a rotation checkpoint). Its errors are
// Append's and LastConsistent's (an aggregate whose last message is
// forged cannot be appended to).
func (l *Log) AppendNext(ctx context.Context, ev Event, filter string) (uint64, error) {
	for range maxAttempts {
		var prev uint64
		rec, err := l.LastConsistent(ctx, filter)
		switch {
		case err == nil:
			prev = rec.Seq
		case !errors.Is(err, ErrNotFound):
			return 0, err
		}
		seq, err := l.Append(ctx, ev, Expect{Filter: filter, Seq: prev})
		if !errors.Is(err, ErrConflict) {
			return seq, err
		}
	}
	return 0, fmt.Errorf("append %s: %w (too much contention)", ev.Subject, ErrConflict)
}

// endAppendSpan records the outcome of an Append on span and ends it. The
// error text stays out of the span: it names the subject.
func endAppendSpan(span trace.Span, seq uint64, err error) {
	if !span.IsRecording() {
		span.End() // its attributes would be dropped: spare building them
		return
	}
	result := "ok"
	switch {
	case err == nil:
		span.SetAttributes(attribute.Int64("eventlog.seq", int64(seq)))
	case errors.Is(err, ErrConflict):
		result = "conflict"
	case errors.Is(err, ErrAmbiguous):
		result = "ambiguous"
	case errors.Is(err, ErrInvalidEvent):
		result = "invalid"
	default:
		result = "error"
	}
	span.SetAttributes(attribute.String("eventlog.result", result))
	if err != nil && result != "conflict" {
		// A conflict is the expected loss of a compare-and-set race.
		span.SetStatus(codes.Error, result)
	}
	span.End()
}

// resolve learns whether a retried append was stored. Under
// compare-and-set the message that follows the expected sequence on the
// aggregate is the one that won: it is ours if it carries our ID (the last
// message would not do: another may have followed ours already).
func (l *Log) resolve(ctx context.Context, ev Event, exp Expect) (uint64, error) {
	rec, err := l.get(ctx, msgGetRequest{Seq: exp.Seq + 1, NextFor: exp.Filter}, true)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrForged) {
		return 0, fmt.Errorf("append %s: %w", ev.Subject, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: append %s: resolve: %v", ErrAmbiguous, ev.Subject, err)
	}
	if rec.ID == ev.ID {
		return rec.Seq, nil
	}
	return 0, fmt.Errorf("append %s: %w", ev.Subject, ErrConflict)
}

func (l *Log) checkEvent(ev Event, exp Expect) error {
	if l.cfg.Auth == nil {
		return fmt.Errorf("%w: this log was attached without the service's key and cannot append", ErrInvalidEvent)
	}
	if !strings.HasPrefix(ev.Subject, l.cfg.Prefix+".") || strings.ContainsAny(ev.Subject, "*> \t\r\n") {
		return fmt.Errorf("%w: subject %q", ErrInvalidEvent, ev.Subject)
	}
	if len(ev.Data) > l.cfg.MaxPayload {
		return fmt.Errorf("%w: payload of %d bytes over %d", ErrInvalidEvent, len(ev.Data), l.cfg.MaxPayload)
	}
	// Every event names the aggregate message it follows: that is what
	// makes an authentic event published again detectable (Follows).
	if !strings.HasPrefix(exp.Filter, l.cfg.Prefix+".") {
		return fmt.Errorf("%w: filter %q: every append is conditional on its aggregate", ErrInvalidEvent, exp.Filter)
	}
	return nil
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// isAmbiguous reports errors after which the message may have been stored.
func isAmbiguous(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// isRetryable reports errors after which the message was certainly not
// stored and a retry may succeed.
func isRetryable(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// maxAttempts bounds the publishes of one Append (the first and its retries).
const maxAttempts = 8

func backoff(attempt int) time.Duration {
	d := time.Duration(attempt*attempt) * 20 * time.Millisecond
	if d > time.Second {
		d = time.Second
	}
	return d
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// JetStream returns the JetStream context of the log's connection, for the
// read models kept beside the stream (the families KV bucket).
func (l *Log) JetStream() jetstream.JetStream { return l.js }

// Replicas returns the stream's replica count.
func (l *Log) Replicas() int { return l.cfg.Replicas }
