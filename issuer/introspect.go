package issuer

import (
	"context"
	"errors"
	"slices"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/issuer/family"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// IntrospectRefreshToken returns the state of the family of a refresh token
// that is active now: its family exists, is neither revoked nor cut off by
// a revocation of its subject, the token is the family's current one, and
// it has not expired. ok is false for any other token (RFC 7662: an
// inactive token is not an error). It reads the nearest copy of the stream,
// so a revocation acknowledged elsewhere is seen once replicated; a token
// that copy does not know yet (just issued or rotated through another
// replica) is looked up again on the stream leader. Errors are server
// errors only.
func (i *Issuer) IntrospectRefreshToken(ctx context.Context, token string) (st *eventsv1.FamilyState, ok bool, err error) {
	rt, err := parseRefreshToken(token)
	if err != nil {
		return nil, false, nil
	}
	st, ok, err = i.introspectRefresh(ctx, rt, false)
	if err == nil && !ok {
		st, ok, err = i.introspectRefresh(ctx, rt, true)
	}
	return st, ok, err
}

func (i *Issuer) introspectRefresh(ctx context.Context, rt refreshToken, consistent bool) (st *eventsv1.FamilyState, ok bool, err error) {
	f, err := i.load(ctx, rt.familyID, consistent)
	if errors.Is(err, eventlog.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	st = f.st
	if family.MatchSecret(st, hashSecret(rt.secret)) != family.Current || family.Revoked(st) || !family.ActiveAt(st, i.cfg.Now()) {
		return nil, false, nil
	}
	cut, err := i.log.Last(ctx, i.subj.SubjectRevoked(subjectHash(st.GetSubject())))
	switch {
	case errors.Is(err, eventlog.ErrNotFound):
	case err != nil:
		return nil, false, err
	case family.CutOffBy(st.GetIssuedSeq(), cut.Seq):
		return nil, false, nil
	}
	return st, true, nil
}

// AudienceAcceptable reports whether a token for the audiences aud may be
// accepted by, or disclosed to, a resource server that expects want ("":
// no expectation) and whose caller policy restricts it to allowed (empty:
// no restriction): want, if set, is one of aud and, under a restriction,
// one of allowed; under a restriction, aud shares an audience with allowed.
// RFC 7662 §4: a resource server learns nothing of tokens meant for
// others.
func AudienceAcceptable(aud []string, want string, allowed []string) bool {
	if want != "" && (!slices.Contains(aud, want) || (len(allowed) > 0 && !slices.Contains(allowed, want))) {
		return false
	}
	return len(allowed) == 0 || slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(allowed, a) })
}
