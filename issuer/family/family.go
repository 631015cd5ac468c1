// Package family holds the rules of a token family as pure functions of its
// state and time: which generation a presented refresh secret is, whether
// the family is active at an instant, whether a subject cut-off reaches it,
// what a refresh decides, and whether an access token is revoked. The
// issuer decides with them, and so do introspection, listing, the audit
// and resource servers (projections/subscriber), so that each rule has one
// answer everywhere.
//
// The instant of expiry follows RFC 7519 §4.1.4 ("on or after which ... MUST
// NOT be accepted"): a family is active strictly before RefreshExpiresAt.
package family

import (
	"crypto/subtle"
	"time"

	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// SpentPrefixLen is how much of a spent secret's SHA-256 a family keeps.
const SpentPrefixLen = 8

// Match is what a presented refresh secret is to a family.
type Match int

const (
	// Unknown: no generation of the family, or one older than it
	// remembers; a guess.
	Unknown Match = iota
	// Current: the family's live refresh token.
	Current
	// Previous: the generation just rotated away (the grace window's).
	Previous
	// Spent: an older generation the family remembers.
	Spent
)

// MatchSecret returns what the refresh secret whose SHA-256 is h is to the
// family in state st, comparing in constant time.
func MatchSecret(st *eventsv1.FamilyState, h []byte) Match {
	switch {
	case subtle.ConstantTimeCompare(h, st.GetSecretHash()) == 1:
		return Current
	case len(st.GetPreviousSecretHash()) > 0 && subtle.ConstantTimeCompare(h, st.GetPreviousSecretHash()) == 1:
		return Previous
	case spentPrefix(st.GetSpentSecretPrefixes(), h):
		return Spent
	}
	return Unknown
}

// spentPrefix reports whether h's prefix is among the spent prefixes, in
// time independent of where it matches.
func spentPrefix(spent, h []byte) bool {
	if len(h) < SpentPrefixLen {
		return false
	}
	found := 0
	for i := 0; i+SpentPrefixLen <= len(spent); i += SpentPrefixLen {
		found |= subtle.ConstantTimeCompare(spent[i:i+SpentPrefixLen], h[:SpentPrefixLen])
	}
	return found == 1
}

// ActiveAt reports whether the family's refresh token may still be used at
// t: strictly before its refresh expiry (expired on or after it), whatever
// its status.
func ActiveAt(st *eventsv1.FamilyState, t time.Time) bool {
	return t.Before(st.GetRefreshExpiresAt().AsTime())
}

// EndsAt is the instant from which nothing can use the family any more:
// neither its refresh token (refresh expiry, see ActiveAt) nor any access
// token issued from it (the last one's expiry), whatever its status. A
// revoked family's revocation must be answered until then. It is when
// a replica may forget the family, and what the log's retention counts
// from.
func EndsAt(st *eventsv1.FamilyState) time.Time {
	end := st.GetRefreshExpiresAt().AsTime()
	if a := st.GetAccessExpiresAt().AsTime(); a.After(end) {
		end = a
	}
	return end
}

// Revoked reports whether the family is revoked (by any reason).
func Revoked(st *eventsv1.FamilyState) bool {
	return st.GetStatus() == eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED
}

// CutOffBy reports whether a cut-off of the family's subject at stream
// sequence cutoffSeq ends the family: it was issued before the cut-off.
// issuedSeq is the sequence of the family's issued event.
func CutOffBy(issuedSeq, cutoffSeq uint64) bool { return cutoffSeq > issuedSeq }

// Status is how a family is listed: "active", "expired" or "revoked".
func Status(st *eventsv1.FamilyState, now time.Time) string {
	switch {
	case Revoked(st):
		return "revoked"
	case !ActiveAt(st, now):
		return "expired"
	}
	return "active"
}

// AccessClaims are the claims of an access token that its revocation
// depends on.
type AccessClaims struct {
	Subject  string    // sub
	FamilyID string    // sid
	IssuedAt time.Time // iat (whole seconds)
}

// Revokes reports whether an access token with claims c is revoked, given
// whether its family is revoked and the latest cut-off of its subject (the
// zero time for none). A cut-off revokes every token of the subject issued
// at or before it; iat has one-second precision, so a token issued in the
// same second as the cut-off, even just after it, counts as revoked (the
// safe side). The service and resource servers answer with this one
// predicate.
func Revokes(c AccessClaims, familyRevoked bool, cutoff time.Time) bool {
	if familyRevoked && c.FamilyID != "" {
		return true
	}
	return !cutoff.IsZero() && !c.IssuedAt.After(cutoff)
}

// Presented is a refresh request as the family's rules see it.
type Presented struct {
	SecretHash []byte // SHA-256 of the presented secret
	ClientID   string
	DPoPJKT    string // thumbprint of the request's DPoP key, "" without DPoP
}

// Decision is what a refresh of a family decides.
type Decision int

const (
	// DecideUnknown: the token is none the family remembers (a guess);
	// refused, nothing revoked.
	DecideUnknown Decision = iota
	// DecideClientMismatch: another client's family; refused.
	DecideClientMismatch
	// DecideRevoked: the family is revoked; refused.
	DecideRevoked
	// DecideDPoPMismatch: a DPoP-bound family presented without a proof of
	// its key (RFC 9449 §5); refused before reuse detection, so a stolen
	// spent token without the key cannot revoke the victim's family.
	DecideDPoPMismatch
	// DecideExpired: the current token, at or after the refresh expiry.
	DecideExpired
	// DecideRotate: the current token: rotate.
	DecideRotate
	// DecideGrace: the previous token inside the grace window: hand out
	// the successor of the last rotation (at most once).
	DecideGrace
	// DecideRotated: the previous token of a caller that lost the race to
	// the very next rotation: refused, nothing revoked.
	DecideRotated
	// DecideReuse: a spent token replayed: revoke the family.
	DecideReuse
)

// Decide returns what a refresh presenting p decides on the family in
// state st at now. grace is the reuse grace window (0: none); racedGen is
// the generation at which p's token was current when a concurrent rotation
// beat the caller's (0: no race seen).
func Decide(st *eventsv1.FamilyState, p Presented, now time.Time, grace time.Duration, racedGen uint64) Decision {
	m := MatchSecret(st, p.SecretHash)
	switch {
	case m == Unknown:
		return DecideUnknown
	case st.GetClientId() != p.ClientID:
		return DecideClientMismatch
	case Revoked(st):
		return DecideRevoked
	case st.GetDpopJkt() != "" && st.GetDpopJkt() != p.DPoPJKT:
		return DecideDPoPMismatch
	case m == Current && !ActiveAt(st, now):
		return DecideExpired
	case m == Current:
		return DecideRotate
	case m == Previous && InGrace(st, now, grace):
		return DecideGrace
	case m == Previous && racedGen != 0 && st.GetGeneration() == racedGen+1:
		return DecideRotated
	}
	return DecideReuse
}

// InGrace reports whether the previous token may still be answered with the
// successor of the family's last rotation at now: a grace record exists and
// now is at most grace after the rotation.
func InGrace(st *eventsv1.FamilyState, now time.Time, grace time.Duration) bool {
	if grace <= 0 || st.GetGraceId() == "" {
		return false
	}
	return !now.After(st.GetRotatedAt().AsTime().Add(grace))
}

// RetainUntil returns until when the event log keeps an event that leaves
// a family in state st after an event the log keeps until prev (the zero
// time for none), retention (EVENT_RETENTION) being how long events are
// kept for audit after the family ended; the zero time, for a retention of
// 0, means forever.
//
// A family ended at EndsAt: its refresh expiry, and not before its last
// access token expired (a revocation must be answered until then); a
// revoked state keeps the refresh expiry it had, and the later of the two
// is used all the same. And never before prev:
// each event of a family then leaves the log no earlier than the events
// before it (even after REFRESH_TOKEN_TTL was lowered), so the events left
// are always the end of the family's history and its last state, which
// the issuer decides from, is never an earlier one. A revocation or a
// rotation that left before the state it replaced would bring back a
// revoked family or a spent refresh token.
func RetainUntil(st *eventsv1.FamilyState, retention time.Duration, prev time.Time) time.Time {
	if retention <= 0 {
		return time.Time{}
	}
	if until := EndsAt(st).Add(retention); until.After(prev) {
		return until
	}
	return prev
}

// CutoffRetainUntil returns until when the event log keeps a subject
// cut-off made at at, retention being EVENT_RETENTION (0: forever, the
// zero time). A cut-off is needed while a token it ends can still be
// presented: an access token issued before it lives accessTTL, and a
// family issued before it, rotated just before it and not yet revoked
// (the issuer revokes it at its next refresh) lives refreshTTL.
func CutoffRetainUntil(at time.Time, accessTTL, refreshTTL, retention time.Duration) time.Time {
	if retention <= 0 {
		return time.Time{}
	}
	return at.Add(max(accessTTL, refreshTTL) + retention)
}
