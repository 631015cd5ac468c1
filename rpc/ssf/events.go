package ssf

import (
	"fmt"
	"strings"
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
	// Keys are the subject keys (userKey, sessionKey) a receiver may have
	// removed from its stream.
	Keys []string
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
		admin, user, who := reasonTexts(e.GetReason(), e.GetReasonText(), st.GetKeyIds())
		return &signal{Type: EventSessionRevoked, Subject: sessionSubject(tokenIssuer, st.GetSubject(), st.GetFamilyId()),
			Keys: []string{userKey(st.GetSubject()), sessionKey(st.GetFamilyId())}, Seq: rec.Seq,
			Body: map[string]any{"event_timestamp": at.Unix(), "initiating_entity": who,
				"reason_admin": map[string]string{"en": admin}, "reason_user": map[string]string{"en": user}}}, nil
	case *eventsv1.SubjectRevoked:
		if e.GetSubject() == "" {
			return nil, fmt.Errorf("%w: seq %d: a subject cut-off without subject", events.ErrBadRecord, rec.Seq)
		}
		at := rec.Time
		if e.GetRevokedAt() != nil {
			at = e.GetRevokedAt().AsTime()
		}
		admin, user, who := reasonTexts(e.GetReason(), e.GetReasonText(), nil)
		return &signal{Type: EventSessionsRevoked, Subject: userSubject(tokenIssuer, e.GetSubject()), Keys: []string{userKey(e.GetSubject())}, Seq: rec.Seq,
			Body: map[string]any{"event_timestamp": at.Unix(), "initiating_entity": who,
				"reason_admin": map[string]string{"en": admin}, "reason_user": map[string]string{"en": user}}}, nil
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
	return &signal{Type: EventKeyCompromised, Subject: &Subject{Format: "opaque", ID: kid}, Seq: rec.Seq, Body: body, NotSignedBy: kid}, nil
}

func timeOr(t, def time.Time) int64 {
	if t.IsZero() || t.Unix() <= 0 {
		return def.Unix()
	}
	return t.Unix()
}

// reasonTexts is the one rule of how a revocation reason reads in a SET:
// reason_admin (for the receiver's operators: the reason's name, the
// caller's words, the keys of a compromise), reason_user (for the user)
// and initiating_entity (CAEP 1.0 §2: admin, user, policy or system).
func reasonTexts(r eventsv1.RevocationReason, text string, keyIDs []string) (admin, user, initiating string) {
	name := events.ReasonName(r)
	switch r {
	case eventsv1.RevocationReason_REVOCATION_REASON_REUSE:
		admin, user, initiating = "refresh token reuse detected", "Your session was ended because a sign-in token was used twice.", "policy"
	case eventsv1.RevocationReason_REVOCATION_REASON_CLIENT:
		admin, user, initiating = "revoked by the client", "You signed out.", "user"
	case eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT:
		admin, user, initiating = "every session of the user revoked", "All your sessions were ended.", "admin"
	case eventsv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE:
		admin, user, initiating = "signing key compromised", "Your session was ended for security reasons.", "system"
		if len(keyIDs) > 0 {
			admin += " (session's keys: " + strings.Join(keyIDs, ", ") + ")"
		}
	case eventsv1.RevocationReason_REVOCATION_REASON_ADMIN:
		admin, user, initiating = "revoked by an administrator", "Your session was ended by an administrator.", "admin"
	default:
		admin, user, initiating = "revoked", "Your session was ended.", "user"
	}
	admin = name + ": " + admin
	if text != "" && text != name {
		admin += ": " + text
	}
	return admin, user, initiating
}
