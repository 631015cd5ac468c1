package eventlog

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// Subjects builds every subject and aggregate filter of the stream from one
// prefix (default "token"). Using these functions everywhere is what keeps
// one filter string per aggregate (see the package documentation).
type Subjects struct {
	prefix string
}

// NewSubjects returns the subject scheme under prefix.
func NewSubjects(prefix string) Subjects { return Subjects{prefix: prefix} }

// Prefix returns the subject prefix, for example "token".
func (s Subjects) Prefix() string { return s.prefix }

// SubjectID returns the <sid> of a subject (a user) in
// <prefix>.subject.<sid>.revoked and in the families read model's keys:
// base64url of its SHA-256, since a subject may hold any character and a
// subject token may not.
func SubjectID(subject string) string {
	h := sha256.Sum256([]byte(subject))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Revocations returns the one filter that matches every revocation event,
// of a family (<prefix>.family.<fid>.revoked) and of a subject
// (<prefix>.subject.<sid>.revoked): a single filter lets a subscriber's
// permissions name it.
func (s Subjects) Revocations() string { return s.prefix + ".*.*.revoked" }

// All returns the filter of every subject of the stream.
func (s Subjects) All() string { return s.prefix + ".>" }

// Family returns the subject of event (issued, rotated, revoked) of family fid.
func (s Subjects) Family(fid, event string) string {
	return s.prefix + ".family." + fid + "." + event
}

// FamilyFilter returns the aggregate filter of family fid.
func (s Subjects) FamilyFilter(fid string) string { return s.prefix + ".family." + fid + ".>" }

// Families returns the filter of every family event.
func (s Subjects) Families() string { return s.prefix + ".family.>" }

// SubjectRevoked returns the subject of the cut-off event of subject hash sid.
func (s Subjects) SubjectRevoked(sid string) string {
	return s.prefix + ".subject." + sid + ".revoked"
}

// SubjectRevocations returns the filter of every subject cut-off event.
func (s Subjects) SubjectRevocations() string { return s.prefix + ".subject.>" }

// Key returns the subject of event of key kid.
func (s Subjects) Key(kid, event string) string { return s.prefix + ".key." + kid + "." + event }

// Keys returns the aggregate filter of the set of signing keys: key events
// are serialized across all keys.
func (s Subjects) Keys() string { return s.prefix + ".key.>" }

// Grace returns the subject of a sealed grace record of family fid.
func (s Subjects) Grace(fid, graceID string) string {
	return s.prefix + ".grace." + fid + "." + graceID
}

// DPoP returns the subject that claims a DPoP proof's jti (hash h) for key jkt.
func (s Subjects) DPoP(jkt, h string) string { return s.prefix + ".dpop." + jkt + "." + h }

// LogRekeyed returns the subject of the checkpoints of ENCRYPTION_KEY
// rotations (Authenticator.Vouch).
func (s Subjects) LogRekeyed() string { return s.prefix + ".log.rekeyed" }

// LogTick returns the subject of the ticks that move event time forward
// while the log is quiet (events.LogTick).
func (s Subjects) LogTick() string { return s.prefix + ".log.tick" }

// Kind returns the second token of a subject of this scheme ("family",
// "subject", "key", "grace", "dpop"), or "" if the subject is not under the
// prefix.
func (s Subjects) Kind(subject string) string {
	rest, ok := strings.CutPrefix(subject, s.prefix+".")
	if !ok {
		return ""
	}
	kind, _, _ := strings.Cut(rest, ".")
	return kind
}

// validToken reports whether t can be one token of a subject: not empty, no
// dot, no wildcard, no white space or control character.
func validToken(t string) bool {
	if t == "" || len(t) > 256 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c <= ' ' || c == '.' || c == '*' || c == '>' || c == 0x7f {
			return false
		}
	}
	return true
}

// ValidToken reports whether t may be used as one token of a subject (an ID
// from outside is checked with it before it becomes part of a subject).
func ValidToken(t string) bool { return validToken(t) }
