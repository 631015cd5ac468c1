package eventlog

import "errors"

var (
	// ErrConflict is returned by Append when the aggregate changed since the
	// expected sequence: another writer won. Reload and decide again.
	ErrConflict = errors.New("eventlog: conflict: aggregate changed")

	// ErrNotFound is returned by Last and LastConsistent when the aggregate
	// has no message.
	ErrNotFound = errors.New("eventlog: not found")

	// ErrInvalidEvent is returned by Append for an event the log refuses to
	// write (empty or wildcard subject, subject outside the stream, payload
	// over MaxPayload).
	ErrInvalidEvent = errors.New("eventlog: invalid event")

	// ErrAmbiguous is returned by Append when the outcome of an append could
	// not be learned before the context ended: it may or may not be stored.
	ErrAmbiguous = errors.New("eventlog: append outcome unknown")

	// ErrForged is returned for a record that is not an authentic event of
	// the service: its authenticator is missing or does not verify (it
	// was not made with the service's ENCRYPTION_KEY), or it does not
	// follow its aggregate's previous message (an authentic event
	// published again). Such a record never becomes state.
	ErrForged = errors.New("eventlog: forged record")
)
