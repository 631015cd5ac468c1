package projections

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	feedv1 "github.com/auth-platform/tokenservice/proto/token/feed/v1"
)

// FeedConfig configures a FeedWriter. Every replica must use the same
// Stream.
type FeedConfig struct {
	// Stream is the feed's stream, which must exist
	// (eventlog.FeedStreamConfig). Default
	// subscriber.DefaultStream.
	Stream string
	// OnBadRecord, if set, is told of every record that does not decode
	// (it is skipped).
	OnBadRecord func(eventlog.Record, error)
	// OnError, if set, is told of every failure to read the feed or to
	// write to it (the writer retries).
	OnError func(error)
}

// FeedWriter writes the subscriber feed: for each revocation and each
// public step of a key's lifecycle in the log, one message of
// proto/token/feed/v1 that holds only public facts (FeedMessage), never a
// secret hash, a family's state or a sealed key.
//
// It reads the log through eventlog (Follow, Replay), so only what the log
// delivers as authentic becomes a feed message. Every replica runs one;
// each message is published with the feed's last sequence as its
// expectation (compare-and-set on the whole feed) and Nats-Msg-Id
// <log stream>:<log sequence>, and carries that log sequence in
// Token-Source-Seq. Whichever writer's publish the server accepts first
// wins; the others read the feed's last message and skip every record up
// to its Token-Source-Seq. So each public event is written once, in log
// order, whichever writers stop or start, and a writer that starts (or
// takes over) resumes after what the feed already holds. The cost of more
// than one writer is a refused publish per replica for each feed message;
// feed messages are rare (revocations and key changes).
type FeedWriter struct {
	log  *eventlog.Log
	js   jetstream.JetStream
	cfg  FeedConfig
	subj subscriber.Subjects

	written atomic.Uint64
}

// NewFeedWriter returns a writer of log's public events to the feed stream
// reached over feed (the jetstream of the account that holds the feed).
func NewFeedWriter(log *eventlog.Log, feed jetstream.JetStream, cfg FeedConfig) *FeedWriter {
	if cfg.Stream == "" {
		cfg.Stream = subscriber.DefaultStream
	}
	return &FeedWriter{log: log, js: feed, cfg: cfg, subj: subscriber.NewSubjects(log.Subjects().Prefix())}
}

// Written returns how many messages this writer has written.
func (w *FeedWriter) Written() uint64 { return w.written.Load() }

// Run writes until ctx ends, starting again from the feed's last message
// after a failure.
func (w *FeedWriter) Run(ctx context.Context) error {
	return untilDone(ctx, w.run, w.cfg.OnError, 500*time.Millisecond)
}

// feedHead is the feed's last message: its sequence, and the log sequence
// it was derived from.
type feedHead struct{ seq, source uint64 }

func (w *FeedWriter) run(ctx context.Context) error {
	head, err := w.head(ctx)
	if err != nil {
		return err
	}
	keys := map[string]*eventsv1.KeyGenerated{}
	var lastKey uint64 // the last key event read: the next one must follow it
	if head.source > 0 {
		// The public keys of the key events still to write were
		// generated before: collect them from the start of the log.
		err := w.log.Replay(ctx, 1, []string{w.log.Subjects().Keys()}, func(rec eventlog.Record) {
			if rec.Seq > head.source {
				return
			}
			lastKey = rec.Seq
			if rec.Type == events.TypeKeyGenerated {
				if ev, err := events.Decode(rec); err == nil {
					trackKey(keys, ev)
				}
			}
		})
		if err != nil {
			return fmt.Errorf("feed: replay key events: %w", err)
		}
	}
	// The whole stream through one filter, skipping what the feed does not
	// carry: an ordered consumer with several filters replays hundreds of
	// times slower (Filters).
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var failed error
	err = w.log.Follow(fctx, head.source+1, Filters(w.log.Subjects()), func(rec eventlog.Record) {
		if failed != nil || !fedType(rec.Type) {
			return
		}
		if w.log.Subjects().Kind(rec.Subject) == "key" {
			// Key events are one aggregate: one published again (an
			// old key.published of a destroyed key) never reaches
			// resource servers.
			if err := rec.Follows(lastKey); err != nil {
				w.log.ReportForged(rec, err)
				return
			}
			lastKey = rec.Seq
		}
		ev, err := events.Decode(rec)
		if err != nil {
			if w.cfg.OnBadRecord != nil {
				w.cfg.OnBadRecord(rec, err)
			}
			return
		}
		trackKey(keys, ev)
		if rec.Seq <= head.source {
			return // another writer wrote it (or nothing was to be written)
		}
		msg, err := FeedMessage(w.subj, rec, ev, keys)
		if err != nil {
			if w.cfg.OnBadRecord != nil {
				w.cfg.OnBadRecord(rec, err)
			}
			return
		}
		if msg == nil {
			return
		}
		msg.Header.Set(jetstream.MsgIDHeader, w.log.Stream()+":"+strconv.FormatUint(rec.Seq, 10))
		if err := w.publish(fctx, &head, rec.Seq, msg); err != nil {
			failed = err
			cancel()
		}
	}, nil)
	if failed != nil {
		return failed
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// fedType reports whether events of type typ become feed messages (or
// carry what later ones need: generated keys' public halves).
func fedType(typ string) bool {
	switch typ {
	case events.TypeFamilyRevoked, events.TypeSubjectRevoked:
		return true
	}
	return strings.HasPrefix(typ, "key.")
}

// publishAttempts bounds the attempts at one message before the writer
// starts again from the feed's head.
const publishAttempts = 5

// publish appends msg, derived from log record source, after head, unless
// the feed already holds that record; head follows the feed.
func (w *FeedWriter) publish(ctx context.Context, head *feedHead, source uint64, msg *nats.Msg) error {
	var last error
	for attempt := range publishAttempts {
		if source <= head.source {
			return nil
		}
		ack, err := w.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequence(head.seq))
		if err == nil && !ack.Duplicate {
			head.seq, head.source = ack.Sequence, source
			w.written.Add(1)
			return nil
		}
		// Another writer appended first (wrong last sequence), this
		// message was stored by an earlier attempt whose answer was lost
		// (duplicate), or the server is away: the feed's head tells.
		last = err
		if last == nil {
			last = errors.New("duplicate")
		}
		h, err := w.head(ctx)
		if err != nil {
			last = err
		} else {
			*head = h
		}
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			}
		}
	}
	return fmt.Errorf("feed: publish log record %d: %w", source, last)
}

// head reads the feed's last message.
func (w *FeedWriter) head(ctx context.Context) (feedHead, error) {
	st, err := w.js.Stream(ctx, w.cfg.Stream)
	if err != nil {
		return feedHead{}, fmt.Errorf("feed: stream %s: %w", w.cfg.Stream, err)
	}
	last := st.CachedInfo().State.LastSeq
	if last == 0 {
		return feedHead{}, nil
	}
	m, err := st.GetMsg(ctx, last)
	if err != nil {
		return feedHead{}, fmt.Errorf("feed: last message %d: %w", last, err)
	}
	src, err := strconv.ParseUint(m.Header.Get(subscriber.HeaderSourceSeq), 10, 64)
	if err != nil {
		return feedHead{}, fmt.Errorf("feed: last message %d has no %s: not written by a feed writer", last, subscriber.HeaderSourceSeq)
	}
	return feedHead{seq: last, source: src}, nil
}

// trackKey remembers the public part of a generated key.
func trackKey(keys map[string]*eventsv1.KeyGenerated, ev proto.Message) {
	if g, ok := ev.(*eventsv1.KeyGenerated); ok {
		keys[g.GetKeyId()] = &eventsv1.KeyGenerated{KeyId: g.GetKeyId(), Algorithm: g.GetAlgorithm(), PublicKey: g.GetPublicKey()}
	}
}

// FeedMessage returns the feed message derived from the log record rec
// (decoded as ev), or nil if rec has no public counterpart (issues,
// rotations, key generation, resealing and the like). keys holds the
// generated keys seen so far, for their public parts. It copies only
// public facts, field by field: a field added to an event reaches the feed
// only when it is added here.
func FeedMessage(subj subscriber.Subjects, rec eventlog.Record, ev proto.Message, keys map[string]*eventsv1.KeyGenerated) (*nats.Msg, error) {
	var (
		subject, typ string
		out          proto.Message
	)
	switch e := ev.(type) {
	case *eventsv1.FamilyRevoked:
		st := e.GetState()
		if !eventlog.ValidToken(st.GetFamilyId()) {
			return nil, fmt.Errorf("%w: seq %d: family revocation without a valid family ID", events.ErrBadRecord, rec.Seq)
		}
		subject, typ = subj.FamilyRevoked(st.GetFamilyId()), subscriber.EventFamilyRevoked
		out = &feedv1.FamilyRevoked{FamilyId: st.GetFamilyId(), Subject: st.GetSubject(), Reason: feedReason(e.GetReason()),
			RevokedAt: st.GetRevokedAt(), AccessExpiresAt: st.GetAccessExpiresAt()}
	case *eventsv1.SubjectRevoked:
		subject, typ = subj.SubjectRevoked(eventlog.SubjectID(e.GetSubject())), subscriber.EventSubjectRevoked
		out = &feedv1.SubjectRevoked{Subject: e.GetSubject(), Reason: feedReason(e.GetReason()), RevokedAt: e.GetRevokedAt()}
	case *eventsv1.KeyPublished:
		subject, typ, out = keyChanged(subj, keys, e.GetKeyId(), feedv1.KeyStatus_KEY_STATUS_PUBLISHED, e.GetAt(), nil)
	case *eventsv1.KeyActivated:
		subject, typ, out = keyChanged(subj, keys, e.GetKeyId(), feedv1.KeyStatus_KEY_STATUS_ACTIVATED, e.GetAt(), nil)
	case *eventsv1.KeyRetired:
		subject, typ, out = keyChanged(subj, keys, e.GetKeyId(), feedv1.KeyStatus_KEY_STATUS_RETIRED, e.GetAt(), e.GetRetainUntil())
	case *eventsv1.KeyDestroyed:
		subject, typ, out = keyChanged(subj, keys, e.GetKeyId(), feedv1.KeyStatus_KEY_STATUS_DESTROYED, e.GetAt(), nil)
	default:
		return nil, nil
	}
	if out == nil {
		return nil, fmt.Errorf("%w: seq %d: key event without a valid key ID", events.ErrBadRecord, rec.Seq)
	}
	data, err := proto.Marshal(out)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(subscriber.HeaderEvent, typ)
	m.Header.Set(subscriber.HeaderSchema, string(out.ProtoReflect().Descriptor().FullName()))
	m.Header.Set(subscriber.HeaderSourceSeq, strconv.FormatUint(rec.Seq, 10))
	return m, nil
}

func keyChanged(subj subscriber.Subjects, keys map[string]*eventsv1.KeyGenerated, kid string, status feedv1.KeyStatus, at, retainUntil *timestamppb.Timestamp) (string, string, proto.Message) {
	if !eventlog.ValidToken(kid) {
		return "", "", nil
	}
	name := subscriber.KeyStatusName(status)
	kc := &feedv1.KeyChanged{KeyId: kid, Status: status, At: at, RetainUntil: retainUntil}
	if g := keys[kid]; g != nil {
		kc.Algorithm = g.GetAlgorithm()
		if pk := g.GetPublicKey(); pk != nil && status != feedv1.KeyStatus_KEY_STATUS_DESTROYED {
			kc.PublicKey = &feedv1.PublicJWK{Kty: pk.GetKty(), Kid: pk.GetKid(), Alg: pk.GetAlg(), N: pk.GetN(), E: pk.GetE(), Crv: pk.GetCrv(), X: pk.GetX(), Y: pk.GetY()}
		}
	}
	return subj.Key(kid, name), "key." + name, kc
}

func feedReason(r eventsv1.RevocationReason) feedv1.RevocationReason {
	switch r {
	case eventsv1.RevocationReason_REVOCATION_REASON_REUSE:
		return feedv1.RevocationReason_REVOCATION_REASON_REUSE
	case eventsv1.RevocationReason_REVOCATION_REASON_CLIENT:
		return feedv1.RevocationReason_REVOCATION_REASON_CLIENT
	case eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT:
		return feedv1.RevocationReason_REVOCATION_REASON_SUBJECT
	case eventsv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE:
		return feedv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE
	case eventsv1.RevocationReason_REVOCATION_REASON_ADMIN:
		return feedv1.RevocationReason_REVOCATION_REASON_ADMIN
	case eventsv1.RevocationReason_REVOCATION_REASON_OTHER:
		return feedv1.RevocationReason_REVOCATION_REASON_OTHER
	}
	return feedv1.RevocationReason_REVOCATION_REASON_UNSPECIFIED
}
