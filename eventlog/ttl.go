package eventlog

import "time"

// MinTTL is the shortest per-message TTL the server accepts.
const MinTTL = time.Second

// TTLUntil returns the per-message TTL (Event.TTL) that keeps a message
// written at now until until, in whole seconds rounded up (the server's
// unit): 0 (no TTL, kept forever) for the zero time, and at least MinTTL,
// so that a message whose time is already past still leaves rather than
// staying forever.
func TTLUntil(until, now time.Time) time.Duration {
	if until.IsZero() {
		return 0
	}
	d := max(until.Sub(now), MinTTL)
	return (d + time.Second - 1) / time.Second * time.Second
}
