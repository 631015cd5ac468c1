package issuer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer/family"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// MaxReasonLen bounds the reason a caller gives, in bytes.
const MaxReasonLen = 64

// Reason is why families are revoked: Code, from the bounded set that the
// metrics and the subscriber feed name, and Text, the caller's own words
// kept on the event for the audit ("" when the caller gave none).
type Reason struct {
	Code eventsv1.RevocationReason
	Text string
}

// reasonCodes are the reasons a caller may name. Any other text is
// REVOCATION_REASON_OTHER; reuse is the service's own.
var reasonCodes = map[string]eventsv1.RevocationReason{
	"client":         eventsv1.RevocationReason_REVOCATION_REASON_CLIENT,
	"subject":        eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT,
	"key_compromise": eventsv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE,
	"admin":          eventsv1.RevocationReason_REVOCATION_REASON_ADMIN,
}

// ParseReason is the one rule that maps a caller's reason to a Reason: ""
// is def; a name of reasonCodes is that code; any other text of at most
// MaxReasonLen bytes of printable UTF-8 ("logout", "password_change") is
// REVOCATION_REASON_OTHER. Text is s as given. Errors: ErrInvalidRequest
// for a reason too long or holding a control character.
func ParseReason(s string, def eventsv1.RevocationReason) (Reason, error) {
	if s == "" {
		return Reason{Code: def}, nil
	}
	if err := checkText("reason", s, MaxReasonLen); err != nil {
		return Reason{}, err
	}
	if c, ok := reasonCodes[s]; ok {
		return Reason{Code: c, Text: s}, nil
	}
	return Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_OTHER, Text: s}, nil
}

// reasonLabel is the bounded metric label of a reason: its name.
func reasonLabel(r eventsv1.RevocationReason) string { return events.ReasonName(r) }

// ReasonLabels lists every value reasonLabel returns, for metrics.
var ReasonLabels = []string{"reuse", "client", "subject", "key_compromise", "admin", "other", "unspecified"}

// subjectHash is the subject's token in token.subject.<sid>.revoked:
// subjects may hold any character, a subject token may not.
func subjectHash(subject string) string { return eventlog.SubjectID(subject) }

// SubjectHash returns the <sid> of a subject in token.subject.<sid>.revoked.
func SubjectHash(subject string) string { return subjectHash(subject) }

// RevokeTarget is what a RevokeRequest names.
type RevokeTarget int

// The targets of a revocation.
const (
	TargetNone RevokeTarget = iota
	TargetRefreshToken
	TargetAccessToken
	TargetFamily
	TargetSubject
)

// RevokeRequest is one revocation (RFC 7009): a target and its value, a
// reason ("" for the target's default: client, or subject for a subject),
// and the client scope of the caller.
type RevokeRequest struct {
	Target RevokeTarget
	// Value is the refresh token, access token, family ID or subject.
	Value string
	// Reason is the caller's reason (ParseReason), or "" for the
	// target's default.
	Reason string
	// ClientScope, if not empty, restricts the revocation of a token or a
	// family to families issued to one of these clients (RFC 7009 §2.1: a
	// client revokes its own tokens); another client's family counts as
	// nothing revoked, so the caller learns nothing about it. A subject
	// revocation is across clients and ignores it.
	ClientScope []string
}

// Revoke carries out req and returns how many families it revoked (0 for
// an unknown, malformed or out-of-scope token or family: not an error, RFC
// 7009 §2.2). Errors: ErrInvalidRequest (no target, a reason too long or
// not printable, bad subject); others are server errors.
func (i *Issuer) Revoke(ctx context.Context, req RevokeRequest) (int, error) {
	def := eventsv1.RevocationReason_REVOCATION_REASON_CLIENT
	if req.Target == TargetSubject {
		def = eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT
	}
	if req.Target == TargetNone {
		return 0, invalidRequest("one of refresh_token, family_id, subject or access_token is required")
	}
	reason, err := ParseReason(req.Reason, def)
	if err != nil {
		return 0, err
	}
	switch req.Target {
	case TargetRefreshToken:
		return i.revokeRefreshToken(ctx, req.Value, reason, req.ClientScope)
	case TargetAccessToken:
		return i.revokeAccessToken(ctx, req.Value, reason, req.ClientScope)
	case TargetFamily:
		return i.revokeFamily(ctx, req.Value, reason, req.ClientScope)
	}
	return i.revokeSubject(ctx, req.Value, reason)
}

// RevokeFamily revokes family fid, for any client. It returns how many
// families it revoked: 0 for an unknown or already revoked family (not an
// error).
func (i *Issuer) RevokeFamily(ctx context.Context, fid string, reason eventsv1.RevocationReason) (int, error) {
	return i.revokeFamily(ctx, fid, Reason{Code: reason}, nil)
}

func (i *Issuer) revokeFamily(ctx context.Context, fid string, reason Reason, scope []string) (int, error) {
	if !validFamilyID(fid) {
		return 0, nil // cannot exist: RFC 7009 says no error
	}
	n, seq, err := i.revokeLoaded(ctx, fid, reason, scope, nil)
	return i.visible(ctx, n, seq, err)
}

// revocationVisibleWait bounds how long a revocation of one family waits
// for this replica's projections to apply it (visible).
const revocationVisibleWait = 2 * time.Second

// visible returns n and err of a revocation of one family once this
// replica's projections hold it (at most revocationVisibleWait): a caller
// that revokes a token and then introspects it, or presents it to
// ValidateDPoP, on the replica that answered sees it revoked. Other
// replicas see it within the propagation time. The revocation is in the
// log either way: a wait that runs out is not an error.
func (i *Issuer) visible(ctx context.Context, n int, seq uint64, err error) (int, error) {
	if err != nil || n == 0 {
		return n, err
	}
	ctx, cancel := context.WithTimeout(ctx, revocationVisibleWait)
	defer cancel()
	_ = i.index.WaitFor(ctx, seq)
	return n, nil
}

// revokeLoaded revokes fid if its client is in scope (empty: any) and
// match (when set) accepts its state; seq is the revocation's position.
func (i *Issuer) revokeLoaded(ctx context.Context, fid string, reason Reason, scope []string, match func(*eventsv1.FamilyState) bool) (n int, seq uint64, err error) {
	now := i.cfg.Now()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := conflictPause(ctx, attempt); err != nil {
			return 0, 0, err
		}
		f, err := i.load(ctx, fid, attempt > 0)
		if err != nil && !errors.Is(err, eventlog.ErrNotFound) {
			return 0, 0, err
		}
		if err == nil && len(scope) > 0 && !slices.Contains(scope, f.st.GetClientId()) {
			return 0, 0, nil // a family's client never changes: no need to ask the leader
		}
		if err != nil || (match != nil && !match(f.st)) || f.st.GetStatus() == eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED {
			if attempt == 0 {
				// The first read may come from a follower that has not
				// stored a family issued or rotated a moment ago through
				// another replica: ask the leader before revoking nothing.
				continue
			}
			return 0, 0, nil
		}
		seq, err = i.revoke(ctx, f, reason, now)
		if errors.Is(err, eventlog.ErrConflict) {
			continue
		}
		if err != nil {
			return 0, 0, err
		}
		i.cfg.Observer.Revoked(reasonLabel(reason.Code), 1)
		return 1, seq, nil
	}
	return 0, 0, fmt.Errorf("revoke %s: too much contention", fid)
}

// RevokeRefreshToken revokes the family of a refresh token, current or
// spent, for any client. A malformed token or one that matches nothing
// revokes nothing and is not an error (RFC 7009 §2.2).
func (i *Issuer) RevokeRefreshToken(ctx context.Context, token string, reason eventsv1.RevocationReason) (int, error) {
	return i.revokeRefreshToken(ctx, token, Reason{Code: reason}, nil)
}

func (i *Issuer) revokeRefreshToken(ctx context.Context, token string, reason Reason, scope []string) (int, error) {
	rt, err := parseRefreshToken(token)
	if err != nil {
		return 0, nil
	}
	h := hashSecret(rt.secret)
	n, seq, err := i.revokeLoaded(ctx, rt.familyID, reason, scope, func(st *eventsv1.FamilyState) bool {
		return family.MatchSecret(st, h) != family.Unknown
	})
	return i.visible(ctx, n, seq, err)
}

// RevokeAccessToken revokes the family of an access token this service
// issued (expired or not), for any client. An invalid token revokes
// nothing and is not an error.
func (i *Issuer) RevokeAccessToken(ctx context.Context, token string, reason eventsv1.RevocationReason) (int, error) {
	return i.revokeAccessToken(ctx, token, Reason{Code: reason}, nil)
}

func (i *Issuer) revokeAccessToken(ctx context.Context, token string, reason Reason, scope []string) (int, error) {
	v, err := i.VerifyAccessToken(token, false)
	if err != nil || !validFamilyID(v.FamilyID) {
		return 0, nil
	}
	n, seq, err := i.revokeLoaded(ctx, v.FamilyID, reason, scope, nil)
	return i.visible(ctx, n, seq, err)
}

// subjectIndexWait bounds how long RevokeSubject waits for the family index
// to include every family issued before the cut-off.
const subjectIndexWait = 10 * time.Second

// RevokeSubject revokes every family of subject: it appends the subject's
// cut-off, which from then on stops the refresh of every family issued
// before it (even one the index does not list yet), then revokes each
// family the index lists. It returns how many families it revoked.
func (i *Issuer) RevokeSubject(ctx context.Context, subject string, reason eventsv1.RevocationReason) (int, error) {
	return i.revokeSubject(ctx, subject, Reason{Code: reason})
}

func (i *Issuer) revokeSubject(ctx context.Context, subject string, reason Reason) (int, error) {
	if err := checkText("subject", subject, MaxSubjectLen); err != nil {
		return 0, err
	}
	now := i.cfg.Now()
	ev, err := events.SubjectRevoked(i.subj, &eventsv1.SubjectRevoked{Subject: subject, RevokedAt: timestamppb.New(now), Reason: reason.Code, ReasonText: reason.Text})
	if err != nil {
		return 0, err
	}
	retain(&ev, family.CutoffRetainUntil(now, i.cfg.AccessTTL, i.cfg.RefreshTTL, i.cfg.Retention), now)
	// A cut-off records a fact: it follows the subject's previous one.
	seq, err := i.log.AppendNext(ctx, ev, ev.Subject)
	if err != nil {
		return 0, fmt.Errorf("revoke subject: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, subjectIndexWait)
	defer cancel()
	if err := i.index.WaitFor(wctx, seq); err != nil {
		// The cut-off is in the log and stops every refresh; only the
		// per-family events are missing. Report it, do not hide it.
		return 0, fmt.Errorf("revoke subject: family index behind: %w", err)
	}
	n := 0
	cutOff := func(st *eventsv1.FamilyState) bool { return family.CutOffBy(st.GetIssuedSeq(), seq) }
	for _, fid := range i.index.ActiveFamiliesOf(subject) {
		k, _, err := i.revokeLoaded(ctx, fid, reason, nil, cutOff)
		if err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// RevokeSignedBy revokes every active family that holds access tokens
// signed by key kid (a compromised key), with reason key_compromise, as
// the family index lists them. Call it after the key left the JWKS; a
// family issued by a request that was already signing with the key then
// can slip through, and is listed by the next call.
func (i *Issuer) RevokeSignedBy(ctx context.Context, kid string) (int, error) {
	n := 0
	for _, fid := range i.index.ActiveFamiliesSignedBy(kid) {
		k, _, err := i.revokeLoaded(ctx, fid, Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE}, nil, nil)
		if err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}
