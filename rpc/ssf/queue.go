package ssf

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/signing/seal"
)

// queue holds every SET not yet acknowledged, in one JetStream stream:
// subject <prefix>.<stream ID>.<jti>, payload the SET sealed (it names a
// user and a session), Nats-Msg-Id the jti, so a SET made again within the
// duplicate window is stored once. Order of a stream's SETs is the stream
// sequence. An acknowledged SET is removed (purge of its subject, or
// delete of its message); what no receiver acknowledges leaves after the
// retention (MaxAge) or when the queue is over its size (oldest first).
type queue struct {
	stream jetstream.Stream
	js     jetstream.JetStream
	nc     *nats.Conn
	name   string
	prefix string
	sealer *seal.Sealer
}

// queued is one SET in the queue.
type queued struct {
	JTI  string
	SET  string
	Seq  uint64
	Time time.Time
}

func openQueue(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, name string, replicas int, retention time.Duration, maxBytes int64, sealer *seal.Sealer) (*queue, error) {
	prefix := "tokend_ssf." + name
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: name, Description: "Shared Signals: SETs not yet acknowledged (tokend)", Subjects: []string{prefix + ".>"},
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1), Retention: jetstream.LimitsPolicy,
		// The duplicate window (a SET made again is stored once) may not
		// exceed MaxAge.
		MaxAge: retention, MaxBytes: maxBytes, Discard: jetstream.DiscardOld, Duplicates: min(2*time.Minute, retention),
	})
	if err != nil {
		return nil, fmt.Errorf("ssf queue %s: %w", name, err)
	}
	return &queue{stream: st, js: js, nc: nc, name: name, prefix: prefix, sealer: sealer}, nil
}

func (q *queue) filter(streamID string) string { return q.prefix + "." + streamID + ".>" }

func (q *queue) subject(streamID, jti string) string { return q.prefix + "." + streamID + "." + jti }

func (q *queue) aad(subject string) []byte { return []byte("ssf-set\x00" + subject) }

// put stores set for stream streamID, once per jti.
func (q *queue) put(ctx context.Context, streamID, jti, set string) error {
	subj := q.subject(streamID, jti)
	sealed, err := q.sealer.Seal([]byte(set), q.aad(subj))
	if err != nil {
		return err
	}
	if _, err := q.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: sealed, Header: nats.Header{jetstream.MsgIDHeader: []string{jti}}},
		jetstream.WithExpectStream(q.name)); err != nil {
		return fmt.Errorf("ssf queue: put %s: %w", subj, err)
	}
	return nil
}

// read returns up to max SETs of stream streamID, oldest first, and
// whether more are queued.
func (q *queue) read(ctx context.Context, streamID string, max int) ([]queued, bool, error) {
	var out []queued
	seq := uint64(1)
	for len(out) <= max {
		m, err := q.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(q.filter(streamID)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("ssf queue: read %s: %w", streamID, err)
		}
		seq = m.Sequence + 1
		if len(out) == max {
			return out, true, nil
		}
		qd, err := q.open(m.Subject, m.Sequence, m.Time, m.Data)
		if err != nil {
			return nil, false, err
		}
		out = append(out, qd)
	}
	return out, false, nil
}

func (q *queue) open(subject string, seq uint64, t time.Time, data []byte) (queued, error) {
	plain, err := q.sealer.Open(data, q.aad(subject))
	if err != nil {
		return queued{}, fmt.Errorf("ssf queue: open %s: %w", subject, err)
	}
	return queued{JTI: subject[len(subject)-22:], SET: string(plain), Seq: seq, Time: t}, nil
}

// remove drops the SET jti of stream streamID (an acknowledgement) and
// returns when it was made (zero if it was not queued: acknowledged twice,
// expired, or not ours, which is no error).
func (q *queue) remove(ctx context.Context, streamID, jti string) (time.Time, error) {
	if !validID(jti) {
		return time.Time{}, nil
	}
	m, err := q.stream.GetLastMsgForSubject(ctx, q.subject(streamID, jti))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("ssf queue: remove %s: %w", jti, err)
	}
	return m.Time, q.removeSeq(ctx, m.Sequence)
}

// removeSeq drops the message at seq (a pushed SET).
func (q *queue) removeSeq(ctx context.Context, seq uint64) error {
	if err := q.stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("ssf queue: delete %d: %w", seq, err)
	}
	return nil
}

// drop removes every SET of stream streamID (a disabled or deleted stream).
func (q *queue) drop(ctx context.Context, streamID string) error {
	if err := q.stream.Purge(ctx, jetstream.WithPurgeSubject(q.filter(streamID))); err != nil {
		return fmt.Errorf("ssf queue: drop %s: %w", streamID, err)
	}
	return nil
}

// pending returns how many SETs are queued and when the oldest was made.
func (q *queue) pending(ctx context.Context) (uint64, time.Time, error) {
	info, err := q.stream.Info(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	return info.State.Msgs, info.State.FirstTime, nil
}

// count returns how many SETs of stream streamID are queued, from an
// ephemeral consumer of its subjects (the server counts them; no SET is
// read).
func (q *queue) count(ctx context.Context, streamID string) (uint64, error) {
	c, err := q.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{FilterSubject: q.filter(streamID), AckPolicy: jetstream.AckNonePolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: time.Minute, MemoryStorage: true, Replicas: 1})
	if err != nil {
		return 0, fmt.Errorf("ssf queue: count %s: %w", streamID, err)
	}
	info := c.CachedInfo()
	// Were the delete lost, InactiveThreshold would remove it in a minute.
	if err := q.stream.DeleteConsumer(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, fmt.Errorf("ssf queue: count %s: %w", streamID, err)
	}
	return info.NumPending, nil
}

// wait returns a channel that receives when a SET of stream streamID is
// queued, and a function that stops waiting.
func (q *queue) wait(streamID string) (<-chan struct{}, func(), error) {
	ch := make(chan struct{}, 1)
	sub, err := q.nc.Subscribe(q.filter(streamID), func(*nats.Msg) {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return ch, func() { _ = sub.Unsubscribe() }, nil
}
