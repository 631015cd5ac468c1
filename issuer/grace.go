package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// graceTTLMargin keeps a grace record a little longer than the window, so
// a request at the window's last instant still finds it.
const graceTTLMargin = time.Second

// writeGrace seals the response of a rotation and stores it for the grace
// window, before the rotation is appended. It returns the grace ID the
// rotation names.
func (i *Issuer) writeGrace(ctx context.Context, fid string, t Tokens) (string, error) {
	gid, err := newJTI(i.cfg.Rand)
	if err != nil {
		return "", err
	}
	plain, err := json.Marshal(t)
	if err != nil {
		return "", err
	}
	sealed, err := i.sealer.Seal(plain, []byte(fid+"."+gid))
	if err != nil {
		return "", fmt.Errorf("seal grace record: %w", err)
	}
	ev, err := events.Grace(i.subj, fid, &eventsv1.GraceRecord{GraceId: gid, SealedResponse: sealed}, i.cfg.Grace+graceTTLMargin)
	if err != nil {
		return "", err
	}
	// The grace ID is new: the record is the first on its subject.
	if _, err := i.log.Append(ctx, ev, eventlog.Expect{Filter: ev.Subject}); err != nil {
		return "", fmt.Errorf("write grace record: %w", err)
	}
	return gid, nil
}

// errGraceMissing: the family names a grace record that is gone (its TTL
// ended early) or does not open. The request is refused; nothing is
// revoked, since the client may be honest.
var errGraceMissing = fmt.Errorf("%w: refresh token already rotated", ErrInvalidGrant)

// errGraceUsed: the successor was already handed out to a presentation of
// the spent token. Refresh treats the presentation as reuse.
var errGraceUsed = errors.New("issuer: grace successor already handed out")

// graceSuccessor returns the response of the family's last rotation to a
// client that presents the previous token inside the grace window, at
// most once: it appends, with compare-and-set on the grace record's
// subject, a record that marks the successor as handed out. It returns
// errGraceUsed if it was already, and eventlog.ErrConflict if a concurrent
// presentation marked it first. The DPoP binding was checked by Refresh.
func (i *Issuer) graceSuccessor(ctx context.Context, st *eventsv1.FamilyState, now time.Time) (Tokens, error) {
	fid, gid := st.GetFamilyId(), st.GetGraceId()
	subject := i.subj.Grace(fid, gid)
	rec, err := i.log.LastConsistent(ctx, subject)
	if errors.Is(err, eventlog.ErrNotFound) {
		return Tokens{}, errGraceMissing
	}
	if err != nil {
		return Tokens{}, err
	}
	var gr eventsv1.GraceRecord
	if err := proto.Unmarshal(rec.Data, &gr); err != nil || gr.GetGraceId() != gid {
		return Tokens{}, errGraceMissing
	}
	if gr.GetUsedAt() != nil {
		return Tokens{}, errGraceUsed
	}
	plain, err := i.sealer.Open(gr.GetSealedResponse(), []byte(fid+"."+gid))
	if err != nil && !errors.Is(err, seal.ErrOpen) {
		// The crypto service could not unwrap the data key (it is
		// down): a server error the client retries, not a refusal that
		// would end its session.
		return Tokens{}, fmt.Errorf("open grace record: %w", err)
	}
	if err != nil {
		return Tokens{}, errGraceMissing
	}
	var t Tokens
	if err := json.Unmarshal(plain, &t); err != nil {
		return Tokens{}, errGraceMissing
	}
	used, err := events.Grace(i.subj, fid, &eventsv1.GraceRecord{GraceId: gid, UsedAt: timestamppb.New(now)}, i.cfg.Grace+graceTTLMargin)
	if err != nil {
		return Tokens{}, err
	}
	if _, err := i.log.Append(ctx, used, eventlog.Expect{Filter: subject, Seq: rec.Seq}); err != nil {
		if errors.Is(err, eventlog.ErrConflict) {
			return Tokens{}, err
		}
		return Tokens{}, fmt.Errorf("mark grace successor handed out: %w", err)
	}
	return t, nil
}
