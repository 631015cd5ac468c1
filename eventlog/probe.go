package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// ErrOpenLog is returned by ProbeAnonymousAppend when a client without
// credentials can append to the log.
var ErrOpenLog = errors.New("eventlog: a NATS client without credentials can append to the event log")

// probeWait is how long a probe waits for the stream's answer.
const probeWait = 2 * time.Second

// ProbeAnonymousAppend connects to url as a client without credentials
// (opts may carry TLS settings, never credentials) and tries to append to
// the log. It returns nil if the server refuses: the connection, the
// publish, or both. It returns ErrOpenLog if the stream answered the
// anonymous publish, whatever it answered: the probe names a stream that
// does not exist in Nats-Expected-Stream, so the stream refuses to store
// it, but a stream that answers is one that an anonymous client can
// append to.
//
// The answer can reach the prober two ways, and both are watched: on the
// anonymous connection's own inbox, and, for a client allowed to publish
// but not to subscribe, on an inbox of the service's connection (l's),
// which receives it when the anonymous client lands in the log's account.
func (l *Log) ProbeAnonymousAppend(ctx context.Context, url string, opts ...nats.Option) error {
	pctx, cancel := context.WithTimeout(ctx, probeWait)
	defer cancel()
	// A publish the server refuses for permissions is dropped with an
	// asynchronous error and never answered: end the wait at once.
	anon, err := nats.Connect(url, append(opts, nats.Name("tokend-open-log-probe"), nats.Timeout(probeWait), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				cancel()
			}
		}))...)
	if err != nil {
		return nil // refused at the door (authorization, TLS)
	}
	defer anon.Close()
	subject := l.subjects.prefix + ".probe." + nuid.Next()
	msg := func(reply string) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Reply = reply
		m.Header.Set(jetstream.ExpectedStreamHeader, "tokend-probe-"+nuid.Next())
		m.Data = []byte("tokend start-up probe: this append must be refused")
		return m
	}
	// The service's side: an inbox in the log's account.
	inbox := l.nc.NewRespInbox()
	sub, err := l.nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("eventlog: probe: %w", err)
	}
	defer sub.Unsubscribe()
	if err := l.nc.Flush(); err != nil {
		return fmt.Errorf("eventlog: probe: %w", err)
	}
	_ = anon.PublishMsg(msg(inbox)) // refused or not, the answer (if any) comes to inbox
	if _, err := anon.RequestMsgWithContext(pctx, msg("")); err == nil {
		return fmt.Errorf("%w (%s answered a publish to %s)", ErrOpenLog, anon.ConnectedUrlRedacted(), subject)
	}
	if _, err := sub.NextMsg(100 * time.Millisecond); err == nil {
		return fmt.Errorf("%w (%s answered a publish to %s)", ErrOpenLog, anon.ConnectedUrlRedacted(), subject)
	}
	return ctx.Err()
}
