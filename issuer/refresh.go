package issuer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer/family"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// Refresh rotates a refresh token; a request's DPoP proof is checked
// (req.Proof) only for a token the log knows. Errors: ErrInvalidRequest,
// ErrInvalidGrant (ErrMalformedToken, ErrUnknownToken, ErrTokenExpired,
// ErrFamilyRevoked, ErrTokenReused, ErrTokenRotated, ErrClientMismatch),
// ErrInvalidScope, dpop.ErrKeyMismatch; others are server errors.
func (i *Issuer) Refresh(ctx context.Context, req RefreshRequest) (t Tokens, err error) {
	status := StatusError
	defer func() {
		if err != nil && status == StatusError && !errors.Is(err, context.Canceled) && refusal(err) {
			status = StatusInvalid
		}
		i.cfg.Observer.Refreshed(status)
		if err == nil {
			// A rotation or a grace successor issues a token pair too.
			i.cfg.Observer.Issued(t.TokenType, t.Algorithm)
		}
	}()
	if err := checkClientID(req.ClientID); err != nil {
		return Tokens{}, err
	}
	rt, err := parseRefreshToken(req.RefreshToken)
	if err != nil {
		return Tokens{}, err
	}
	scopes, err := normalizeScopes(req.Scopes)
	if err != nil {
		return Tokens{}, err
	}
	now := i.cfg.Now()
	h := hashSecret(rt.secret)
	// racedGen is the generation at which our token was current when a
	// concurrent rotation beat ours (0: no race seen).
	racedGen := uint64(0)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := conflictPause(ctx, attempt); err != nil {
			return Tokens{}, err
		}
		f, err := i.load(ctx, rt.familyID, attempt > 0)
		if errors.Is(err, eventlog.ErrNotFound) {
			if attempt == 0 {
				continue // a follower may not have the family yet: ask the leader
			}
			return Tokens{}, ErrUnknownToken
		}
		if err != nil {
			return Tokens{}, err
		}
		st := f.st
		if req.Proof != nil && family.MatchSecret(st, h) != family.Unknown {
			jkt, err := req.Proof(ctx)
			if err != nil {
				return Tokens{}, err
			}
			req.DPoPJKT, req.Proof = jkt, nil
		}
		switch family.Decide(st, family.Presented{SecretHash: h, ClientID: req.ClientID, DPoPJKT: req.DPoPJKT}, now, i.cfg.Grace, racedGen) {
		case family.DecideUnknown:
			if attempt == 0 {
				// The first read may come from a follower that lags: a
				// token just rotated on another replica would look
				// unknown. Ask the leader before refusing.
				continue
			}
			return Tokens{}, ErrUnknownToken
		case family.DecideClientMismatch:
			return Tokens{}, ErrClientMismatch
		case family.DecideRevoked:
			return Tokens{}, ErrFamilyRevoked
		case family.DecideDPoPMismatch:
			i.cfg.Observer.SecurityEvent(SecurityDPoPMismatch)
			return Tokens{}, dpop.ErrKeyMismatch
		case family.DecideExpired:
			return Tokens{}, ErrTokenExpired
		case family.DecideRotate:
			t, err := i.rotate(ctx, f, rt.familyID, scopes, now)
			if errors.Is(err, eventlog.ErrConflict) {
				racedGen = st.GetGeneration()
				continue
			}
			if err == nil {
				status = StatusSuccess
			}
			return t, err
		case family.DecideGrace:
			if attempt == 0 {
				// Serve the successor only from the leader's view: a
				// stale read could have missed a revocation.
				continue
			}
			if err := i.checkSubjectCutoff(ctx, f, 0, now); err != nil {
				return Tokens{}, err
			}
			t, err := i.graceSuccessor(ctx, st, now)
			switch {
			case err == nil:
				status = StatusGrace
				return t, nil
			case errors.Is(err, eventlog.ErrConflict):
				continue // a concurrent presentation took it: decide again
			case !errors.Is(err, errGraceUsed):
				return Tokens{}, err
			case racedGen != 0 && st.GetGeneration() == racedGen+1:
				// Presented while current, lost the race to the very
				// next rotation, and the successor is taken: refused,
				// nothing revoked (a concurrent request, not a replay).
				return Tokens{}, ErrTokenRotated
			}
			// The successor went to an earlier presentation of this
			// spent token: a second one is a replay (below).
		case family.DecideRotated:
			return Tokens{}, ErrTokenRotated
		}
		// family.DecideReuse (a spent token outside the grace window), or
		// a grace successor presented twice: revoke the family.
		if err := i.revokeReused(ctx, f, now); err != nil {
			if errors.Is(err, eventlog.ErrConflict) {
				continue
			}
			return Tokens{}, err
		}
		status = StatusReuse
		return Tokens{}, ErrTokenReused
	}
	return Tokens{}, fmt.Errorf("refresh %s: too much contention", rt.familyID)
}

// maxAttempts bounds the reload-and-decide rounds of one command.
const maxAttempts = 10

// conflictPause waits before a retry after a lost compare-and-set. On a
// cluster the leader refuses an append that conflicts with one it has
// proposed but not yet applied, so an immediate reload can still show the
// old state; a short, growing pause lets the winner's write land.
func conflictPause(ctx context.Context, attempt int) error {
	if attempt < 2 {
		return nil // the first reload is immediate
	}
	d := time.Duration(1<<min(attempt-2, 6)) * time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// rotate appends the rotation of f and returns the new tokens, or
// eventlog.ErrConflict if f is no longer the family's last state.
func (i *Issuer) rotate(ctx context.Context, f loaded, fid string, scopes []string, now time.Time) (Tokens, error) {
	st := f.st
	if len(scopes) == 0 {
		scopes = st.GetScopes()
	} else if !subset(scopes, st.GetScopes()) {
		return Tokens{}, fmt.Errorf("%w: requested scopes exceed the granted ones", ErrInvalidScope)
	}
	r, err := newFresh(i.cfg.Rand)
	if err != nil {
		return Tokens{}, err
	}
	next := proto.Clone(st).(*eventsv1.FamilyState)
	next.Generation++
	if len(st.GetPreviousSecretHash()) > 0 {
		next.SpentSecretPrefixes = appendSpent(st.GetSpentSecretPrefixes(), st.GetPreviousSecretHash())
	}
	next.PreviousSecretHash = st.GetSecretHash()
	next.SecretHash = hashSecret(r.secret)
	next.RotatedAt = timestamppb.New(now)
	next.RefreshExpiresAt = timestamppb.New(now.Add(i.cfg.RefreshTTL))
	next.GraceId = ""
	tokens, err := i.mint(ctx, next, r, scopes, now)
	if err != nil {
		return Tokens{}, err
	}
	if i.cfg.Grace > 0 {
		gid, err := i.writeGrace(ctx, fid, tokens)
		if err != nil {
			return Tokens{}, err
		}
		next.GraceId = gid
	}
	ev, err := events.FamilyRotated(i.subj, next, tokens.KeyID, tokens.AccessTokenID)
	if err != nil {
		return Tokens{}, err
	}
	retain(&ev, family.RetainUntil(next, i.cfg.Retention, f.until), now)
	seq, err := i.log.Append(ctx, ev, eventlog.Expect{Filter: i.subj.FamilyFilter(fid), Seq: f.seq})
	if err != nil {
		return Tokens{}, err
	}
	// The subject cut-off is checked after the rotation is in the log: a
	// cut-off that precedes it in the stream wins, whenever it was read.
	if err := i.checkSubjectCutoff(ctx, loaded{st: next, seq: seq, until: now.Add(ev.TTL)}, seq, now); err != nil {
		return Tokens{}, err
	}
	return tokens, nil
}

// checkSubjectCutoff refuses (and revokes) a family whose issued event
// precedes a revocation of its subject that itself precedes before (the
// rotation just appended; 0 for no bound). It reads the cut-off from the
// leader, so a revocation acknowledged anywhere is seen: a rotation that
// follows the cut-off in the stream is never handed out.
func (i *Issuer) checkSubjectCutoff(ctx context.Context, f loaded, before uint64, now time.Time) error {
	rec, err := i.log.LastConsistent(ctx, i.subj.SubjectRevoked(subjectHash(f.st.GetSubject())))
	if errors.Is(err, eventlog.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !family.CutOffBy(f.st.GetIssuedSeq(), rec.Seq) || (before != 0 && rec.Seq > before) {
		return nil // issued after the cut-off, or rotated before it
	}
	if _, err := i.revoke(ctx, f, Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT}, now); err != nil {
		return err // a conflict makes Refresh reload and see the revocation
	}
	i.cfg.Observer.Revoked(reasonLabel(eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT), 1)
	return ErrFamilyRevoked
}

// revokeReused revokes f because a spent token was replayed, and reports
// it as a security event.
func (i *Issuer) revokeReused(ctx context.Context, f loaded, now time.Time) error {
	if _, err := i.revoke(ctx, f, Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_REUSE}, now); err != nil {
		return err
	}
	i.cfg.Observer.SecurityEvent(SecurityRefreshReuse)
	i.cfg.Observer.Revoked(reasonLabel(eventsv1.RevocationReason_REVOCATION_REASON_REUSE), 1)
	return nil
}
