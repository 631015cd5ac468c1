package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// eventView is the JSON line of one event. It holds no secret: refresh
// secrets are only hashes in the log and are left out anyway, and so are
// sealed private keys.
type eventView struct {
	Seq           uint64    `json:"seq"`
	Time          time.Time `json:"time"`
	NATSSubject   string    `json:"nats_subject"`
	Type          string    `json:"type"`
	EventID       string    `json:"event_id,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	Actor         string    `json:"actor,omitempty"`
	FamilyID      string    `json:"family_id,omitempty"`
	Subject       string    `json:"subject,omitempty"`
	ClientID      string    `json:"client_id,omitempty"`
	Generation    uint64    `json:"generation,omitempty"`
	Status        string    `json:"status,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	ReasonText    string    `json:"reason_text,omitempty"`
	DPoPJKT       string    `json:"dpop_jkt,omitempty"`
	KeyID         string    `json:"key_id,omitempty"`
	NewKeyID      string    `json:"new_key_id,omitempty"`
	Algorithm     string    `json:"algorithm,omitempty"`
	// RevokeFamilies and RevokedFamilies: what a key compromise asked
	// for, and how many families its resolving run revoked.
	RevokeFamilies  bool   `json:"revoke_families,omitempty"`
	RevokedFamilies int64  `json:"revoked_families,omitempty"`
	Error           string `json:"error,omitempty"`
}

func viewOf(rec eventlog.Record) eventView {
	v := eventView{Seq: rec.Seq, Time: rec.Time.UTC(), NATSSubject: rec.Subject, Type: rec.Type, EventID: rec.ID,
		CorrelationID: rec.CorrelationID, Actor: rec.Actor}
	if rec.Type == events.TypeDPoPProofUsed {
		var e eventsv1.DPoPProofUsed
		if err := unmarshal(rec.Data, &e); err != nil {
			v.Error = err.Error()
		}
		v.DPoPJKT = e.GetJkt()
		return v
	}
	m, err := events.Decode(rec)
	if err != nil {
		v.Error = err.Error()
		return v
	}
	if st := events.FamilyStateOf(m); st != nil {
		v.FamilyID, v.Subject, v.ClientID = st.GetFamilyId(), st.GetSubject(), st.GetClientId()
		v.Generation, v.DPoPJKT = st.GetGeneration(), st.GetDpopJkt()
		v.Status = events.FamilyStatusName(st.GetStatus())
	}
	switch e := m.(type) {
	case *eventsv1.FamilyRotated:
		v.KeyID = e.GetKeyId()
	case *eventsv1.FamilyRevoked:
		v.Reason, v.ReasonText = events.ReasonName(e.GetReason()), e.GetReasonText()
	case *eventsv1.SubjectRevoked:
		v.Subject, v.Reason, v.ReasonText = e.GetSubject(), events.ReasonName(e.GetReason()), e.GetReasonText()
	case *eventsv1.KeyGenerated:
		v.KeyID, v.Algorithm = e.GetKeyId(), e.GetAlgorithm()
	case *eventsv1.KeyPublished:
		v.KeyID = e.GetKeyId()
	case *eventsv1.KeyActivated:
		v.KeyID = e.GetKeyId()
	case *eventsv1.KeyRetired:
		v.KeyID = e.GetKeyId()
	case *eventsv1.KeyDestroyed:
		v.KeyID = e.GetKeyId()
	case *eventsv1.KeyCompromiseDeclared:
		v.KeyID, v.RevokeFamilies = e.GetKeyId(), e.GetRevokeFamilies()
		v.Reason = events.ReasonName(eventsv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE)
	case *eventsv1.KeyCompromiseResolved:
		v.KeyID, v.NewKeyID, v.RevokedFamilies = e.GetKeyId(), e.GetNewKeyId(), e.GetRevokedFamilies()
	}
	return v
}

type tailFilter struct {
	family, subject, typ string
	fromSeq              uint64
}

// filters returns the stream filters for f: the narrowest subjects that
// can hold a matching event.
func (o *options) filters(f tailFilter) ([]string, error) {
	s := o.log.Subjects()
	p := s.Prefix()
	switch {
	case f.family != "":
		if !eventlog.ValidToken(f.family) {
			return nil, fmt.Errorf("family ID %q is malformed", f.family)
		}
		if f.typ != "" {
			kind, event, ok := strings.Cut(f.typ, ".")
			if !ok || kind != "family" || !eventlog.ValidToken(event) {
				return nil, fmt.Errorf("--type %q cannot match a family's events", f.typ)
			}
			return []string{s.Family(f.family, event)}, nil
		}
		return []string{s.FamilyFilter(f.family)}, nil
	case f.typ != "":
		kind, event, ok := strings.Cut(f.typ, ".")
		if !ok || !eventlog.ValidToken(kind) || !eventlog.ValidToken(event) {
			return nil, fmt.Errorf("--type %q is not kind.event", f.typ)
		}
		switch kind {
		case "dpop":
			return []string{p + ".dpop.>"}, nil
		case "subject":
			return []string{s.SubjectRevocations()}, nil
		}
		return []string{p + "." + kind + ".*." + event}, nil
	}
	return projections.Filters(s), nil
}

func (o *options) tail(ctx context.Context, f tailFilter) error {
	filters, err := o.filters(f)
	if err != nil {
		return err
	}
	from := f.fromSeq
	if from == 0 {
		last, err := o.log.LastSeq(ctx)
		if err != nil {
			return err
		}
		from = last + 1
	}
	enc := json.NewEncoder(o.stdout)
	var werr error
	err = o.log.Follow(ctx, from, filters, func(rec eventlog.Record) {
		if rec.Type == events.TypeGrace {
			return // sealed state, not an event
		}
		v := viewOf(rec)
		if f.typ != "" && v.Type != f.typ {
			return
		}
		if f.subject != "" && v.Subject != f.subject {
			return
		}
		if werr == nil {
			werr = enc.Encode(v)
		}
	}, nil)
	if werr != nil {
		return werr
	}
	return err
}

func (o *options) export(ctx context.Context, from, to uint64) error {
	enc := json.NewEncoder(o.stdout)
	p := newProgress(o.stderr, "exported")
	var werr error
	// One filter over the whole stream (several filters replay hundreds of
	// times slower); grace records are sealed state, not events: skipped.
	err := o.log.Replay(ctx, from, []string{o.log.Subjects().All()}, func(rec eventlog.Record) {
		if (to != 0 && rec.Seq > to) || werr != nil || rec.Type == events.TypeGrace {
			return
		}
		werr = enc.Encode(viewOf(rec))
		p.add(rec.Pending)
	})
	p.done()
	if werr != nil {
		return werr
	}
	return err
}

// progress reports long reads on stderr, at most once a second.
type progress struct {
	w     io.Writer
	verb  string
	n     int
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, verb string) *progress {
	now := time.Now()
	return &progress{w: w, verb: verb, start: now, last: now}
}

func (p *progress) add(pending uint64) {
	p.n++
	if now := time.Now(); now.Sub(p.last) >= time.Second {
		p.last = now
		rate := float64(p.n) / now.Sub(p.start).Seconds()
		fmt.Fprintf(p.w, "%s %d events, %d to go (%.0f/s)\n", p.verb, p.n, pending, rate)
	}
}

func (p *progress) done() {
	if time.Since(p.start) >= time.Second {
		fmt.Fprintf(p.w, "%s %d events in %s\n", p.verb, p.n, time.Since(p.start).Round(time.Millisecond))
	}
}
