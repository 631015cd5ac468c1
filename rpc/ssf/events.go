package ssf

import (
	"fmt"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// Event types the transmitter issues.
const (
	// EventSessionRevoked is CAEP 1.0 §3.1: one session (token family)
	// ended, for any reason, reuse detection included.
	EventSessionRevoked = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	// EventSessionsRevoked is RISC 1.0 §2.6: every session of a user
	// ended (a subject cut-off).
	EventSessionsRevoked = "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked"
	// EventKeyCompromised is this transmitter's own event: a signing key
	// of the service was declared compromised (phase "declared"), and
	// what was done about it (phase "resolved": the replacement key and
	// how many sessions were revoked, each also sent as session-revoked
	// with reason key_compromise).
	EventKeyCompromised = "https://schemas.auth-platform.dev/secevent/tokend/event-type/signing-key-compromised"
	// EventVerification is SSF 1.0 §8.1.4.1; it is sent on request, and
	// needs not be requested.
	EventVerification = "https://schemas.openid.net/secevent/ssf/event-type/verification"
)

// EventTypes returns the event types a stream may request (events_supported).
func EventTypes() []string {
	return []string{EventSessionRevoked, EventSessionsRevoked, EventKeyCompromised}
}

// signal is one security event, before it is addressed to a stream.
type signal struct {
	Type    string
	Subject *Subject
	Body    map[string]any
	// Keys are the subject keys (userKey, sessionKey; a key compromise's
	// is the opaque key ID's) a receiver may have removed from, or added
	// to, its stream.
	Keys []string
	// Aud is the audience of a revoked family (FamilyState audience):
	// who may hear of it when its receiver is restricted (entitled).
	Aud []string
	// Seq is the log record the event comes from.
	Seq uint64
	// NotSignedBy is a key that must not sign the SET: the key whose
	// compromise it reports.
	NotSignedBy string
}

// Filters returns the log subjects the transmitter reads: revocations of
// families and subjects, and key compromises.
func Filters(s eventlog.Subjects) []string {
	return []string{s.Revocations(), s.Key("*", "compromise_declared"), s.Key("*", "compromise_resolved")}
}

// signalOf is the one mapping of a log record to the security event it
// becomes (nil for a record that becomes none). tokenIssuer is the iss of
// the subject identifiers (the access tokens' issuer).
func signalOf(rec eventlog.Record, tokenIssuer string) (*signal, error) {
	switch rec.Type {
	case events.TypeFamilyRevoked, events.TypeSubjectRevoked, events.TypeKeyCompromiseDeclared, events.TypeKeyCompromiseResolved:
	default:
		return nil, nil
	}
	m, err := events.Decode(rec)
	if err != nil {
		return nil, err
	}
	switch e := m.(type) {
	case *eventsv1.FamilyRevoked:
		st := e.GetState()
		if st.GetFamilyId() == "" || st.GetSubject() == "" {
			return nil, fmt.Errorf("%w: seq %d: a revoked family without family ID or subject", events.ErrBadRecord, rec.Seq)
		}
		at := rec.Time
		if st.GetRevokedAt() != nil {
			at = st.GetRevokedAt().AsTime()
		}
		label, who := reasonOf(e.GetReason())
		return &signal{Type: EventSessionRevoked, Subject: sessionSubject(tokenIssuer, st.GetSubject(), st.GetFamilyId()),
			Keys: []string{userKey(st.GetSubject()), sessionKey(st.GetFamilyId())}, Aud: st.GetAudience(), Seq: rec.Seq,
			Body: map[string]any{"event_timestamp": at.Unix(), "initiating_entity": who,
				"reason_admin": map[string]string{"en": label}, "reason_user": map[string]string{"en": label}}}, nil
	case *eventsv1.SubjectRevoked:
		if e.GetSubject() == "" {
			return nil, fmt.Errorf("%w: seq %d: a subject cut-off without subject", events.ErrBadRecord, rec.Seq)
		}
		at := rec.Time
		if e.GetRevokedAt() != nil {
			at = e.GetRevokedAt().AsTime()
		}
		label, who := reasonOf(e.GetReason())
		return &signal{Type: EventSessionsRevoked, Subject: userSubject(tokenIssuer, e.GetSubject()), Keys: []string{userKey(e.GetSubject())}, Seq: rec.Seq,
			Body: map[string]any{"event_timestamp": at.Unix(), "initiating_entity": who,
				"reason_admin": map[string]string{"en": label}, "reason_user": map[string]string{"en": label}}}, nil
	case *eventsv1.KeyCompromiseDeclared:
		return keySignal(rec, e.GetKeyId(), map[string]any{"phase": "declared", "event_timestamp": timeOr(e.GetAt().AsTime(), rec.Time),
			"key_id": e.GetKeyId(), "sessions_revoked": e.GetRevokeFamilies(),
			"affected_sessions": "every session holding an access token signed by key_id"})
	case *eventsv1.KeyCompromiseResolved:
		return keySignal(rec, e.GetKeyId(), map[string]any{"phase": "resolved", "event_timestamp": timeOr(e.GetAt().AsTime(), rec.Time),
			"key_id": e.GetKeyId(), "replaced_by": e.GetNewKeyId(), "revoked_sessions": e.GetRevokedFamilies(),
			"affected_sessions": "every session holding an access token signed by key_id; each revoked one is also sent as session-revoked with reason key_compromise"})
	}
	return nil, nil
}

func keySignal(rec eventlog.Record, kid string, body map[string]any) (*signal, error) {
	if kid == "" {
		return nil, fmt.Errorf("%w: seq %d: a key compromise without key ID", events.ErrBadRecord, rec.Seq)
	}
	return &signal{Type: EventKeyCompromised, Subject: &Subject{Format: "opaque", ID: kid}, Keys: []string{sessionKey(kid)}, Seq: rec.Seq,
		Body: body, NotSignedBy: kid}, nil
}

func timeOr(t, def time.Time) int64 {
	if t.IsZero() || t.Unix() <= 0 {
		return def.Unix()
	}
	return t.Unix()
}

// reasonOf is the one rule of how a revocation reason reads in a SET:
// reason_admin and reason_user are the reason's label alone (reuse,
// client, subject, key_compromise, admin, other), never the words of the
// caller that revoked (they may name a user or an incident, and the
// receivers are outside the platform); initiating_entity is CAEP 1.0 §2's
// (admin, user, policy or system).
func reasonOf(r eventsv1.RevocationReason) (label, initiating string) {
	switch r {
	case eventsv1.RevocationReason_REVOCATION_REASON_REUSE:
		initiating = "policy"
	case eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT, eventsv1.RevocationReason_REVOCATION_REASON_ADMIN:
		initiating = "admin"
	case eventsv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE:
		initiating = "system"
	default:
		initiating = "user"
	}
	return events.ReasonName(r), initiating
}
