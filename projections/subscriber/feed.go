package subscriber

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	feedv1 "github.com/auth-platform/tokenservice/proto/token/feed/v1"
)

// The feed's wire contract: defaults, headers and event types.
const (
	// DefaultStream is the default name of the feed's stream.
	DefaultStream = "TOKENS_FEED"
	// DefaultPrefix is the default subject prefix of the token service's
	// log; the feed's subjects are under <prefix>feed.
	DefaultPrefix = "token"

	// HeaderEvent carries the event type (EventFamilyRevoked, ...).
	HeaderEvent = "Token-Event"
	// HeaderSchema carries the full name of the payload's message
	// (token.feed.v1.FamilyRevoked, ...): a new version is a new name.
	HeaderSchema = "Token-Schema"
	// HeaderSourceSeq carries the sequence, in the token service's log, of
	// the event the message was derived from. The writer uses it to write
	// each event once; readers may use it to correlate with an audit.
	HeaderSourceSeq = "Token-Source-Seq"

	EventFamilyRevoked  = "family.revoked"
	EventSubjectRevoked = "subject.revoked"
	EventKeyPublished   = "key.published"
	EventKeyActivated   = "key.activated"
	EventKeyRetired     = "key.retired"
	EventKeyDestroyed   = "key.destroyed"
)

// Subjects builds the feed's subjects for a log prefix:
//
//	<prefix>feed.family.<fid>.revoked
//	<prefix>feed.subject.<sid>.revoked
//	<prefix>feed.key.<kid>.<published|activated|retired|destroyed>
//
// They differ from the log's (<prefix>.>), so the feed can live in the
// same account as the log on a cluster you run yourself.
type Subjects struct{ p string }

// NewSubjects returns the feed subjects of the log prefix (default
// DefaultPrefix when empty).
func NewSubjects(prefix string) Subjects {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Subjects{p: prefix + "feed"}
}

// All returns the filter of every feed subject.
func (s Subjects) All() string { return s.p + ".>" }

// Revocations returns the filter of every revocation.
func (s Subjects) Revocations() string { return s.p + ".*.*.revoked" }

// Keys returns the filter of every key event.
func (s Subjects) Keys() string { return s.p + ".key.>" }

// FamilyRevoked returns the subject of family fid's revocation.
func (s Subjects) FamilyRevoked(fid string) string { return s.p + ".family." + fid + ".revoked" }

// SubjectRevoked returns the subject of a cut-off of the subject whose ID
// (base64url SHA-256) is sid.
func (s Subjects) SubjectRevoked(sid string) string { return s.p + ".subject." + sid + ".revoked" }

// Key returns the subject of key kid reaching status (published,
// activated, retired or destroyed).
func (s Subjects) Key(kid, status string) string { return s.p + ".key." + kid + "." + status }

// Revocation is a revocation: a family's, or a subject cut-off.
type Revocation struct {
	// Seq is the message's sequence in the stream it was read from.
	Seq uint64
	// SourceSeq is the sequence of the event in the token service's log
	// (Token-Source-Seq); 0 if unknown.
	SourceSeq uint64
	// FamilyID is the revoked family (the sid claim of its access tokens);
	// empty for a subject cut-off.
	FamilyID string
	// Subject is the family's subject, or the subject cut off.
	Subject string
	// Reason is reuse, client, subject, key_compromise or admin.
	Reason    string
	RevokedAt time.Time
	// AccessExpiresAt is, for a family, when its last access token
	// expires.
	AccessExpiresAt time.Time
	// AppendedAt is when the message was stored in the stream.
	AppendedAt time.Time
}

// Key is a step of a signing key's public lifecycle.
type Key struct {
	Seq, SourceSeq uint64
	ID, Algorithm  string
	// Status is published, activated, retired or destroyed.
	Status string
	// PublicKey is the public JWK; nil when the feed does not carry it.
	PublicKey   *feedv1.PublicJWK
	At          time.Time
	RetainUntil time.Time // retired only
	AppendedAt  time.Time
}

// ErrBadMessage is returned by Decode for a feed message that does not
// hold what its headers say.
var ErrBadMessage = errors.New("subscriber: bad feed message")

// maxPayload bounds a feed message: the largest, a KeyChanged with an RSA
// 4096 JWK, is under 1 KiB.
const maxPayload = 64 << 10

// Decode returns the revocation or the key event a feed message holds
// (one of them is set; both nil for an event type it does not know, which
// readers skip). seq and appended are the message's stream sequence and
// time. It returns ErrBadMessage for a payload that does not decode.
func Decode(seq uint64, appended time.Time, h nats.Header, data []byte) (*Revocation, *Key, error) {
	if len(data) > maxPayload {
		return nil, nil, fmt.Errorf("%w: %d bytes", ErrBadMessage, len(data))
	}
	src, _ := strconv.ParseUint(h.Get(HeaderSourceSeq), 10, 64)
	typ := h.Get(HeaderEvent)
	var m proto.Message
	switch typ {
	case EventFamilyRevoked:
		m = &feedv1.FamilyRevoked{}
	case EventSubjectRevoked:
		m = &feedv1.SubjectRevoked{}
	case EventKeyPublished, EventKeyActivated, EventKeyRetired, EventKeyDestroyed:
		m = &feedv1.KeyChanged{}
	default:
		return nil, nil, nil
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrBadMessage, typ, err)
	}
	switch e := m.(type) {
	case *feedv1.FamilyRevoked:
		if e.GetFamilyId() == "" {
			return nil, nil, fmt.Errorf("%w: %s without a family", ErrBadMessage, typ)
		}
		return &Revocation{Seq: seq, SourceSeq: src, FamilyID: e.GetFamilyId(), Subject: e.GetSubject(), Reason: ReasonName(e.GetReason()),
			RevokedAt: e.GetRevokedAt().AsTime(), AccessExpiresAt: e.GetAccessExpiresAt().AsTime(), AppendedAt: appended}, nil, nil
	case *feedv1.SubjectRevoked:
		if e.GetSubject() == "" {
			return nil, nil, fmt.Errorf("%w: %s without a subject", ErrBadMessage, typ)
		}
		return &Revocation{Seq: seq, SourceSeq: src, Subject: e.GetSubject(), Reason: ReasonName(e.GetReason()),
			RevokedAt: e.GetRevokedAt().AsTime(), AppendedAt: appended}, nil, nil
	case *feedv1.KeyChanged:
		k := &Key{Seq: seq, SourceSeq: src, ID: e.GetKeyId(), Algorithm: e.GetAlgorithm(), Status: KeyStatusName(e.GetStatus()),
			PublicKey: e.GetPublicKey(), At: e.GetAt().AsTime(), AppendedAt: appended}
		if e.GetRetainUntil().IsValid() {
			k.RetainUntil = e.GetRetainUntil().AsTime()
		}
		return nil, k, nil
	}
	return nil, nil, nil
}

// ReasonName returns the short name of a revocation reason: reuse, client,
// subject, key_compromise, admin, other, or unspecified.
func ReasonName(r feedv1.RevocationReason) string {
	switch r {
	case feedv1.RevocationReason_REVOCATION_REASON_REUSE:
		return "reuse"
	case feedv1.RevocationReason_REVOCATION_REASON_CLIENT:
		return "client"
	case feedv1.RevocationReason_REVOCATION_REASON_SUBJECT:
		return "subject"
	case feedv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE:
		return "key_compromise"
	case feedv1.RevocationReason_REVOCATION_REASON_ADMIN:
		return "admin"
	case feedv1.RevocationReason_REVOCATION_REASON_OTHER:
		return "other"
	}
	return "unspecified"
}

// KeyStatusName returns the short name of a key status, which is also the
// last token of its subject and of its event type: published, activated,
// retired, destroyed, or unspecified.
func KeyStatusName(s feedv1.KeyStatus) string {
	switch s {
	case feedv1.KeyStatus_KEY_STATUS_PUBLISHED:
		return "published"
	case feedv1.KeyStatus_KEY_STATUS_ACTIVATED:
		return "activated"
	case feedv1.KeyStatus_KEY_STATUS_RETIRED:
		return "retired"
	case feedv1.KeyStatus_KEY_STATUS_DESTROYED:
		return "destroyed"
	}
	return "unspecified"
}
