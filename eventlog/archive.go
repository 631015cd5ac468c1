package eventlog

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// Stored is a message as the stream stores it: subject, sequence, time,
// headers and payload. It is what an archive of the log keeps (tokenctl
// export --archive), so that the authenticator of an event that has left
// the stream can still be checked, under the same ENCRYPTION_KEY, when the
// archive is read back (Restore).
type Stored struct {
	Seq     uint64      `json:"seq"`
	Time    time.Time   `json:"time"`
	Subject string      `json:"subject"`
	Header  nats.Header `json:"header,omitempty"`
	Data    []byte      `json:"data,omitempty"`
}

// ReplayStored is Replay delivering the stored messages: every message on
// filters from sequence from that exists when it starts, in stream order.
// With Config.Auth, a message whose authenticator fails is not delivered
// (it is reported to OnForged), as in Replay.
func (l *Log) ReplayStored(ctx context.Context, from uint64, filters []string, fn func(Stored)) error {
	return l.read(ctx, from, filters, func(r Record, h nats.Header) {
		fn(Stored{Seq: r.Seq, Time: r.Time, Subject: r.Subject, Header: h, Data: r.Data})
	}, nil, true)
}

// Restore returns the record of a stored message read back from an
// archive, checked like every record the log reads: with Config.Auth, an
// error wrapping ErrForged (reported to OnForged) if its authenticator
// fails, so an archive can be audited only as far as it is authentic.
// The chain of an aggregate (Record.Follows) is the reader's to check.
func (l *Log) Restore(s Stored) (Record, error) {
	rec, err := l.record(s.Subject, s.Seq, s.Time, s.Header, s.Data)
	if err != nil {
		l.ReportForged(rec, err)
	}
	return rec, err
}
