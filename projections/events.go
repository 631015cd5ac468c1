package projections

import (
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
)

// Projected reports whether rec is an event of some projection; grace
// records, DPoP claims and rotation checkpoints are not.
func Projected(rec eventlog.Record) bool {
	return rec.Type != events.TypeGrace && rec.Type != events.TypeDPoPProofUsed && rec.Type != events.TypeLogRekeyed
}
