// Package events is the vocabulary of the token service's event log: the
// event types stored in the Token-Event header, one constructor per event
// that returns its subject, type and payload together, the one Decode of a
// record's payload, and the names of the enums. The command side (issuer,
// keyring, dpop) and the read side (projections, tokenctl) both import it;
// neither imports the other for it.
package events

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

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
	// A key compromise: declared before anything is done about it,
	// resolved when everything it asked for is done.
	TypeKeyCompromiseDeclared = "key.compromise_declared"
	TypeKeyCompromiseResolved = "key.compromise_resolved"
	// Records in the stream that are no projection's events: sealed grace
	// successors, DPoP jti claims and ENCRYPTION_KEY rotation checkpoints.
	TypeGrace         = "grace"
	TypeDPoPProofUsed = "dpop.proof_used"
	TypeLogRekeyed    = "log.rekeyed"
	// TypeLogTick carries no fact: it moves event time forward while the
	// log is quiet, so that the projections forget what ended.
	TypeLogTick = "log.tick"
)

// ErrBadRecord is returned by Decode for a record whose type is unknown or
// whose payload does not parse.
var ErrBadRecord = errors.New("events: bad record")

// newPayload returns an empty payload of event type typ, or nil.
func newPayload(typ string) proto.Message {
	switch typ {
	case TypeFamilyIssued:
		return &eventsv1.FamilyIssued{}
	case TypeFamilyRotated:
		return &eventsv1.FamilyRotated{}
	case TypeFamilyRevoked:
		return &eventsv1.FamilyRevoked{}
	case TypeSubjectRevoked:
		return &eventsv1.SubjectRevoked{}
	case TypeKeyGenerated:
		return &eventsv1.KeyGenerated{}
	case TypeKeyPublished:
		return &eventsv1.KeyPublished{}
	case TypeKeyActivated:
		return &eventsv1.KeyActivated{}
	case TypeKeyRetired:
		return &eventsv1.KeyRetired{}
	case TypeKeyDestroyed:
		return &eventsv1.KeyDestroyed{}
	case TypeKeyRequested:
		return &eventsv1.KeyRequested{}
	case TypeKeyResealed:
		return &eventsv1.KeyResealed{}
	case TypeKeyFallback:
		return &eventsv1.KeyFallbackEngaged{}
	case TypeKeyDeleted:
		return &eventsv1.KeyMaterialDeleted{}
	case TypeKeyCompromiseDeclared:
		return &eventsv1.KeyCompromiseDeclared{}
	case TypeKeyCompromiseResolved:
		return &eventsv1.KeyCompromiseResolved{}
	case TypeGrace:
		return &eventsv1.GraceRecord{}
	case TypeDPoPProofUsed:
		return &eventsv1.DPoPProofUsed{}
	case TypeLogRekeyed:
		return &eventsv1.LogRekeyed{}
	case TypeLogTick:
		return &eventsv1.LogTick{}
	}
	return nil
}

// Decode parses the payload of rec according to its type. It returns an
// error wrapping ErrBadRecord for an unknown type or a payload that does
// not parse (with a bounded nesting depth).
func Decode(rec eventlog.Record) (proto.Message, error) {
	m := newPayload(rec.Type)
	if m == nil {
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

// ReasonName is the lower-case name of a revocation reason: reuse, client,
// subject, key_compromise, admin, other, or unspecified.
func ReasonName(r eventsv1.RevocationReason) string {
	switch r {
	case eventsv1.RevocationReason_REVOCATION_REASON_REUSE:
		return "reuse"
	case eventsv1.RevocationReason_REVOCATION_REASON_CLIENT:
		return "client"
	case eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT:
		return "subject"
	case eventsv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE:
		return "key_compromise"
	case eventsv1.RevocationReason_REVOCATION_REASON_ADMIN:
		return "admin"
	case eventsv1.RevocationReason_REVOCATION_REASON_OTHER:
		return "other"
	}
	return "unspecified"
}

// FamilyStatusName is the lower-case name of a family status.
func FamilyStatusName(s eventsv1.FamilyStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "FAMILY_STATUS_"))
}

// event marshals m into the event of type typ on subject.
func event(subject, typ string, m proto.Message) (eventlog.Event, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return eventlog.Event{}, fmt.Errorf("events: %s: %w", typ, err)
	}
	return eventlog.Event{Subject: subject, Type: typ, Data: data}, nil
}

// FamilyIssued is the event that creates family st.
func FamilyIssued(s eventlog.Subjects, st *eventsv1.FamilyState) (eventlog.Event, error) {
	return event(s.Family(st.GetFamilyId(), "issued"), TypeFamilyIssued, &eventsv1.FamilyIssued{State: st})
}

// FamilyRotated is the rotation of a family to state st, whose access
// token accessTokenID key keyID signed.
func FamilyRotated(s eventlog.Subjects, st *eventsv1.FamilyState, keyID, accessTokenID string) (eventlog.Event, error) {
	return event(s.Family(st.GetFamilyId(), "rotated"), TypeFamilyRotated,
		&eventsv1.FamilyRotated{State: st, KeyId: keyID, AccessTokenId: accessTokenID})
}

// FamilyRevoked is the revocation of a family, st its resulting state.
func FamilyRevoked(s eventlog.Subjects, e *eventsv1.FamilyRevoked) (eventlog.Event, error) {
	return event(s.Family(e.GetState().GetFamilyId(), "revoked"), TypeFamilyRevoked, e)
}

// SubjectRevoked is the cut-off of every family of a subject issued
// before it.
func SubjectRevoked(s eventlog.Subjects, e *eventsv1.SubjectRevoked) (eventlog.Event, error) {
	return event(s.SubjectRevoked(eventlog.SubjectID(e.GetSubject())), TypeSubjectRevoked, e)
}

// Key is an event of key kid's lifecycle or of its compromise: its type
// and subject follow from the payload's message type (KeyGenerated is
// key.generated on <prefix>.key.<kid>.generated, KeyCompromiseDeclared
// key.compromise_declared on <prefix>.key.<kid>.compromise_declared, and
// so on). It is the one constructor of key events.
func Key(s eventlog.Subjects, kid string, m proto.Message) (eventlog.Event, error) {
	typ := keyType(m)
	if typ == "" {
		return eventlog.Event{}, fmt.Errorf("events: %T is not a key event", m)
	}
	return event(s.Key(kid, strings.TrimPrefix(typ, "key.")), typ, m)
}

func keyType(m proto.Message) string {
	switch m.(type) {
	case *eventsv1.KeyGenerated:
		return TypeKeyGenerated
	case *eventsv1.KeyPublished:
		return TypeKeyPublished
	case *eventsv1.KeyActivated:
		return TypeKeyActivated
	case *eventsv1.KeyRetired:
		return TypeKeyRetired
	case *eventsv1.KeyDestroyed:
		return TypeKeyDestroyed
	case *eventsv1.KeyRequested:
		return TypeKeyRequested
	case *eventsv1.KeyResealed:
		return TypeKeyResealed
	case *eventsv1.KeyFallbackEngaged:
		return TypeKeyFallback
	case *eventsv1.KeyMaterialDeleted:
		return TypeKeyDeleted
	case *eventsv1.KeyCompromiseDeclared:
		return TypeKeyCompromiseDeclared
	case *eventsv1.KeyCompromiseResolved:
		return TypeKeyCompromiseResolved
	}
	return ""
}

// Grace is the sealed successor of family fid's rotation gid, kept for ttl.
func Grace(s eventlog.Subjects, fid string, g *eventsv1.GraceRecord, ttl time.Duration) (eventlog.Event, error) {
	ev, err := event(s.Grace(fid, g.GetGraceId()), TypeGrace, g)
	ev.TTL = ttl
	return ev, err
}

// DPoPProofUsed claims a DPoP proof's jti (its hash h) for key jkt, for ttl.
func DPoPProofUsed(s eventlog.Subjects, p *eventsv1.DPoPProofUsed, ttl time.Duration) (eventlog.Event, error) {
	ev, err := event(s.DPoP(p.GetJkt(), p.GetJtiHash()), TypeDPoPProofUsed, p)
	ev.TTL = ttl
	return ev, err
}

// LogRekeyed is a checkpoint of an ENCRYPTION_KEY rotation.
func LogRekeyed(s eventlog.Subjects, c *eventsv1.LogRekeyed) (eventlog.Event, error) {
	return event(s.LogRekeyed(), TypeLogRekeyed, c)
}

// LogTick moves event time forward at at; it follows the previous tick.
func LogTick(s eventlog.Subjects, at time.Time) (eventlog.Event, error) {
	return event(s.LogTick(), TypeLogTick, &eventsv1.LogTick{At: timestamppb.New(at)})
}
