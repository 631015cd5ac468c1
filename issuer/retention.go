package issuer

import (
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
)

// retain sets the time to live of ev, appended at now, so that the log
// keeps it until until (family.RetainUntil, family.CutoffRetainUntil; the
// zero time keeps it forever). Every family and subject event the issuer
// appends goes through it. An event whose family ended longer than the
// retention ago (a reuse revocation of an old family) gets the shortest
// TTL, not none: it leaves with the rest.
//
// The TTL is covered by the event's MAC: it cannot be stripped to keep an
// event, or shortened to drop one early, without the MAC failing.
func retain(ev *eventlog.Event, until, now time.Time) { ev.TTL = eventlog.TTLUntil(until, now) }
