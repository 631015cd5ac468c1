package projections

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// Event types, stored in the Token-Event header. They are part of the
// public event contract.
const (
	TypeFamilyIssued   = "family.issued"
	TypeFamilyRotated  = "family.rotated"
	TypeFamilyRevoked  = "family.revoked"
	TypeSubjectRevoked = "subject.revoked"
	TypeKeyGenerated   = "key.generated"
	TypeKeyPublished   = "key.published"
	TypeKeyActivated   = "key.activated"
	TypeKeyRetired     = "key.retired"
	TypeKeyDestroyed   = "key.destroyed"
	TypeKeyRequested   = "key.requested"
	TypeKeyResealed    = "key.resealed"
	TypeKeyFallback    = "key.fallback_engaged"
	TypeKeyDeleted     = "key.material_deleted"
)

// Types of the records that are in the stream but are no projection's
// events: sealed grace successors, DPoP jti claims and the checkpoints of
// ENCRYPTION_KEY rotations.
const (
	TypeGrace         = "grace"
	TypeDPoPProofUsed = "dpop.proof_used"
	TypeLogRekeyed    = "log.rekeyed"
)

// Projected reports whether rec is an event of some projection; grace
// records, DPoP claims and rotation checkpoints are not.
func Projected(rec eventlog.Record) bool {
	return rec.Type != TypeGrace && rec.Type != TypeDPoPProofUsed && rec.Type != TypeLogRekeyed
}

// ErrBadRecord is returned by Decode for a record whose type is unknown or
// whose payload does not parse.
var ErrBadRecord = errors.New("projections: bad record")

// Decode parses the payload of rec according to its type.
func Decode(rec eventlog.Record) (proto.Message, error) {
	var m proto.Message
	switch rec.Type {
	case TypeFamilyIssued:
		m = &eventsv1.FamilyIssued{}
	case TypeFamilyRotated:
		m = &eventsv1.FamilyRotated{}
	case TypeFamilyRevoked:
		m = &eventsv1.FamilyRevoked{}
	case TypeSubjectRevoked:
		m = &eventsv1.SubjectRevoked{}
	case TypeKeyGenerated:
		m = &eventsv1.KeyGenerated{}
	case TypeKeyPublished:
		m = &eventsv1.KeyPublished{}
	case TypeKeyActivated:
		m = &eventsv1.KeyActivated{}
	case TypeKeyRetired:
		m = &eventsv1.KeyRetired{}
	case TypeKeyDestroyed:
		m = &eventsv1.KeyDestroyed{}
	case TypeKeyRequested:
		m = &eventsv1.KeyRequested{}
	case TypeKeyResealed:
		m = &eventsv1.KeyResealed{}
	case TypeKeyFallback:
		m = &eventsv1.KeyFallbackEngaged{}
	case TypeKeyDeleted:
		m = &eventsv1.KeyMaterialDeleted{}
	default:
		return nil, fmt.Errorf("%w: seq %d: unknown type %q", ErrBadRecord, rec.Seq, rec.Type)
	}
	if err := (proto.UnmarshalOptions{RecursionLimit: 32}).Unmarshal(rec.Data, m); err != nil {
		return nil, fmt.Errorf("%w: seq %d %s: %v", ErrBadRecord, rec.Seq, rec.Type, err)
	}
	return m, nil
}

// FamilyStateOf returns the family state an event carries, or nil.
func FamilyStateOf(m proto.Message) *eventsv1.FamilyState {
	switch e := m.(type) {
	case *eventsv1.FamilyIssued:
		return e.GetState()
	case *eventsv1.FamilyRotated:
		return e.GetState()
	case *eventsv1.FamilyRevoked:
		return e.GetState()
	}
	return nil
}
