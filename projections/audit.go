package projections

import (
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer/family"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// Step is one event in the lineage of a family, as an audit shows it.
type Step struct {
	Seq           uint64    `json:"seq"`
	Time          time.Time `json:"time"`
	Type          string    `json:"type"`
	FamilyID      string    `json:"family_id"`
	Subject       string    `json:"subject"`
	ClientID      string    `json:"client_id"`
	Generation    uint64    `json:"generation"`
	DPoPJKT       string    `json:"dpop_jkt,omitempty"`
	KeyID         string    `json:"key_id,omitempty"`
	NewKeyID      string    `json:"new_key_id,omitempty"` // the key that replaced a compromised one
	Reason        string    `json:"reason,omitempty"`
	ReasonText    string    `json:"reason_text,omitempty"` // the caller's words (RevokeToken's reason)
	CorrelationID string    `json:"correlation_id,omitempty"`
	Actor         string    `json:"actor,omitempty"`
}

// Lineage turns the records of one family (token.family.<fid>.>, in
// stream order), of its subject's cut-offs and of the compromises of the
// keys that signed its tokens into audit steps (the subject and key steps
// carry no family ID). Records of other kinds are skipped; an undecodable
// one is an error.
func Lineage(recs []eventlog.Record) ([]Step, error) {
	var out []Step
	for _, rec := range recs {
		m, err := events.Decode(rec)
		if err != nil {
			return nil, err
		}
		step := Step{Seq: rec.Seq, Time: rec.Time, Type: rec.Type, CorrelationID: rec.CorrelationID, Actor: rec.Actor}
		switch e := m.(type) {
		case *eventsv1.SubjectRevoked:
			step.Subject = e.GetSubject()
			step.Reason, step.ReasonText = events.ReasonName(e.GetReason()), e.GetReasonText()
			out = append(out, step)
			continue
		case *eventsv1.KeyCompromiseDeclared:
			step.KeyID, step.Reason = e.GetKeyId(), events.ReasonName(eventsv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE)
			out = append(out, step)
			continue
		case *eventsv1.KeyCompromiseResolved:
			step.KeyID, step.NewKeyID = e.GetKeyId(), e.GetNewKeyId()
			out = append(out, step)
			continue
		case *eventsv1.FamilyRotated:
			step.KeyID = e.GetKeyId()
		case *eventsv1.FamilyRevoked:
			step.Reason, step.ReasonText = events.ReasonName(e.GetReason()), e.GetReasonText()
		case *eventsv1.FamilyIssued:
			if ids := e.GetState().GetKeyIds(); len(ids) > 0 {
				step.KeyID = ids[len(ids)-1]
			}
		}
		st := events.FamilyStateOf(m)
		if st == nil {
			continue
		}
		step.FamilyID, step.Subject, step.ClientID = st.GetFamilyId(), st.GetSubject(), st.GetClientId()
		step.Generation, step.DPoPJKT = st.GetGeneration(), st.GetDpopJkt()
		out = append(out, step)
	}
	return out, nil
}

// Verdict answers "was it valid at that instant".
type Verdict struct {
	Valid  bool   `json:"valid"`
	Reason string `json:"reason"`
}

// FamilyValidAt judges a family at instant at from its lineage: valid if
// it was issued, not revoked, not cut off by its subject, and its current
// refresh token had not expired.
func FamilyValidAt(steps []Step, states []*eventsv1.FamilyState, at time.Time) Verdict {
	return judge(steps, states, at, nil, true)
}

// FamilyLiveAt judges whether access tokens of the family were honoured at
// instant at: issued, not revoked, not cut off (refresh expiry does not
// matter to access tokens).
func FamilyLiveAt(steps []Step, states []*eventsv1.FamilyState, at time.Time) Verdict {
	return judge(steps, states, at, nil, false)
}

// RefreshTokenValidAt judges one refresh token (its secret's SHA-256 is
// secretHash) of a family at instant at.
func RefreshTokenValidAt(steps []Step, states []*eventsv1.FamilyState, secretHash []byte, at time.Time) Verdict {
	return judge(steps, states, at, secretHash, true)
}

// States returns the family state carried by each family record, aligned
// with Lineage's family steps (subject steps get nil).
func States(recs []eventlog.Record) ([]*eventsv1.FamilyState, error) {
	out := make([]*eventsv1.FamilyState, 0, len(recs))
	for _, rec := range recs {
		m, err := events.Decode(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, events.FamilyStateOf(m))
	}
	return out, nil
}

func judge(steps []Step, states []*eventsv1.FamilyState, at time.Time, secretHash []byte, refreshExpiry bool) Verdict {
	var cur *eventsv1.FamilyState
	var curStep Step
	issuedSeq := uint64(0)
	for i, s := range steps {
		if s.Time.After(at) {
			break
		}
		if states[i] == nil {
			// A subject cut-off: it applies to families issued before it.
			if issuedSeq != 0 && family.CutOffBy(issuedSeq, s.Seq) && s.Type == events.TypeSubjectRevoked {
				return Verdict{Reason: fmt.Sprintf("subject revoked at %s (reason %s%s)", s.Time.UTC().Format(time.RFC3339), s.Reason, actor(s))}
			}
			continue
		}
		if issuedSeq == 0 {
			issuedSeq = s.Seq
		}
		cur, curStep = states[i], s
	}
	if cur == nil {
		return Verdict{Reason: "not issued yet"}
	}
	if family.Revoked(cur) {
		return Verdict{Reason: fmt.Sprintf("family revoked at %s (reason %s%s)", curStep.Time.UTC().Format(time.RFC3339), curStep.Reason, actor(curStep))}
	}
	if secretHash != nil {
		switch {
		case family.MatchSecret(cur, secretHash) == family.Current:
		case generationOf(steps, states, secretHash) > 0:
			g := generationOf(steps, states, secretHash)
			return Verdict{Reason: fmt.Sprintf("refresh token of generation %d was spent: generation %d was current since %s", g, cur.GetGeneration(), curStep.Time.UTC().Format(time.RFC3339))}
		default:
			return Verdict{Reason: "refresh token not of this family, or not issued yet at that instant"}
		}
	}
	if exp := cur.GetRefreshExpiresAt().AsTime(); refreshExpiry && !family.ActiveAt(cur, at) {
		return Verdict{Reason: fmt.Sprintf("refresh token expired at %s", exp.UTC().Format(time.RFC3339))}
	}
	return Verdict{Valid: true, Reason: fmt.Sprintf("active: generation %d current since %s", cur.GetGeneration(), curStep.Time.UTC().Format(time.RFC3339))}
}

// generationOf returns the generation whose secret hashes to h, or 0.
func generationOf(steps []Step, states []*eventsv1.FamilyState, h []byte) uint64 {
	for i, st := range states {
		if st != nil && subtle.ConstantTimeCompare(h, st.GetSecretHash()) == 1 {
			return steps[i].Generation
		}
	}
	return 0
}

func actor(s Step) string {
	if s.Actor == "" {
		return ""
	}
	return ", by " + s.Actor
}
