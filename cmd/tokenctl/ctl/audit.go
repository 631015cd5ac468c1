package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// familyRecords returns the records of family fid, of its subject's
// cut-offs and of the compromises of the keys that signed its access
// tokens, in stream order, from the archive (--archive) and the live
// stream.
func (o *options) familyRecords(ctx context.Context, fid string) ([]eventlog.Record, error) {
	if !eventlog.ValidToken(fid) {
		return nil, fmt.Errorf("family ID %q is malformed", fid)
	}
	s := o.log.Subjects()
	recs, err := o.records(ctx, []string{s.FamilyFilter(fid)})
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		if o.archive == "" {
			return nil, fmt.Errorf("no family %s in the log (if it ended longer than EVENT_RETENTION ago, audit with --archive)", fid)
		}
		return nil, fmt.Errorf("no family %s in the log or its archive", fid)
	}
	steps, err := projections.Lineage(recs[:1])
	if err != nil {
		return nil, err
	}
	states, err := projections.States(recs)
	if err != nil {
		return nil, err
	}
	cutoffs, err := o.records(ctx, []string{s.SubjectRevoked(issuer.SubjectHash(steps[0].Subject))})
	if err != nil {
		return nil, err
	}
	recs = append(recs, cutoffs...)
	for _, kid := range signedBy(states) {
		keyRecs, err := o.records(ctx, []string{s.Key(kid, "*")})
		if err != nil {
			return nil, err
		}
		for _, r := range keyRecs {
			if r.Type == events.TypeKeyCompromiseDeclared || r.Type == events.TypeKeyCompromiseResolved {
				recs = append(recs, r)
			}
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Seq < recs[j].Seq })
	return recs, nil
}

// signedBy returns the IDs of the keys that signed a family's access
// tokens, as its states record them, each once.
func signedBy(states []*eventsv1.FamilyState) []string {
	var out []string
	seen := map[string]bool{}
	for _, st := range states {
		for _, kid := range st.GetKeyIds() {
			if !seen[kid] && eventlog.ValidToken(kid) {
				seen[kid] = true
				out = append(out, kid)
			}
		}
	}
	return out
}

func (o *options) auditFamily(ctx context.Context, fid string) error {
	recs, err := o.familyRecords(ctx, fid)
	if err != nil {
		return err
	}
	steps, err := projections.Lineage(recs)
	if err != nil {
		return err
	}
	return o.printLineage(steps)
}

func (o *options) printLineage(steps []projections.Step) error {
	if o.json {
		enc := json.NewEncoder(o.stdout)
		for _, s := range steps {
			if err := enc.Encode(s); err != nil {
				return err
			}
		}
		return nil
	}
	if len(steps) == 0 {
		return nil
	}
	first := steps[0]
	for _, s := range steps {
		if s.FamilyID != "" {
			first = s // a key's compromise may precede the family's issue
			break
		}
	}
	fmt.Fprintf(o.stdout, "family %s  subject %q  client %s\n", first.FamilyID, first.Subject, first.ClientID)
	tw := tabwriter.NewWriter(o.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME\tSEQ\tEVENT\tGEN\tDETAIL\tCORRELATION\tACTOR")
	for _, s := range steps {
		detail := []string{}
		if s.KeyID != "" {
			detail = append(detail, "key "+short(s.KeyID))
		}
		if s.DPoPJKT != "" {
			detail = append(detail, "dpop "+short(s.DPoPJKT))
		}
		if s.NewKeyID != "" {
			detail = append(detail, "replaced by "+short(s.NewKeyID))
		}
		if s.Reason != "" {
			detail = append(detail, "reason "+s.Reason)
		}
		gen := fmt.Sprint(s.Generation)
		if s.FamilyID == "" {
			gen = "-" // a subject's cut-off or a key's compromise
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\n", s.Time.UTC().Format(time.RFC3339Nano), s.Seq, s.Type, gen,
			strings.Join(detail, ", "), dash(s.CorrelationID), dash(s.Actor))
	}
	return tw.Flush()
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// auditSubject finds the subject's families by scanning issued events
// (the log is the authority; the families projection may be elsewhere).
func (o *options) auditSubject(ctx context.Context, subject string) error {
	s := o.log.Subjects()
	var fids []string
	seen := map[string]bool{}
	p := newProgress(o.stderr, "scanned")
	scan := func(r eventlog.Record) {
		p.add(r.Pending)
		m, err := events.Decode(r)
		if err != nil {
			return
		}
		if st := events.FamilyStateOf(m); st != nil && st.GetSubject() == subject && !seen[st.GetFamilyId()] {
			seen[st.GetFamilyId()] = true
			fids = append(fids, st.GetFamilyId())
		}
	}
	issued := []string{s.Prefix() + ".family.*.issued"}
	err := o.archived(issued, scan)
	if err == nil {
		err = o.log.Replay(ctx, 1, issued, scan)
	}
	p.done()
	if err != nil {
		return err
	}
	if len(fids) == 0 {
		return fmt.Errorf("no family of subject %q in the log", subject)
	}
	for i, fid := range fids {
		if i > 0 && !o.json {
			fmt.Fprintln(o.stdout)
		}
		if err := o.auditFamily(ctx, fid); err != nil {
			return err
		}
	}
	return nil
}

// auditAt says whether a refresh token, an access token or a family was
// valid at instant at, and why not.
func (o *options) auditAt(ctx context.Context, at time.Time, target string) error {
	var fid, what string
	var secretHash []byte
	var access *accessClaims
	switch {
	case strings.Count(target, ".") == 2:
		c, err := o.verifyAccessToken(ctx, target)
		if err != nil {
			return o.verdict(at, "access token", projections.Verdict{Reason: err.Error()})
		}
		access, fid, what = c, c.Sid, "access token"
	case strings.Count(target, ".") == 1:
		f, h, err := issuer.ParseRefreshToken(target)
		if err != nil {
			return o.verdict(at, "refresh token", projections.Verdict{Reason: "malformed refresh token"})
		}
		fid, secretHash, what = f, h, "refresh token"
	default:
		fid, what = target, "family"
	}
	recs, err := o.familyRecords(ctx, fid)
	if err != nil {
		return o.verdict(at, what, projections.Verdict{Reason: err.Error()})
	}
	steps, err := projections.Lineage(recs)
	if err != nil {
		return err
	}
	states, err := projections.States(recs)
	if err != nil {
		return err
	}
	var v projections.Verdict
	switch {
	case access != nil:
		switch {
		case at.Before(access.IssuedAt.Time):
			v = projections.Verdict{Reason: "not issued yet (iat " + access.IssuedAt.UTC().Format(time.RFC3339) + ")"}
		case !at.Before(access.ExpiresAt.Time):
			v = projections.Verdict{Reason: "expired at " + access.ExpiresAt.UTC().Format(time.RFC3339)}
		default:
			v = projections.FamilyLiveAt(steps, states, at)
		}
	case secretHash != nil:
		v = projections.RefreshTokenValidAt(steps, states, secretHash, at)
	default:
		v = projections.FamilyValidAt(steps, states, at)
	}
	return o.verdict(at, what, v)
}

func (o *options) verdict(at time.Time, what string, v projections.Verdict) error {
	if o.json {
		if err := json.NewEncoder(o.stdout).Encode(struct {
			At     time.Time `json:"at"`
			Target string    `json:"target"`
			projections.Verdict
		}{at.UTC(), what, v}); err != nil {
			return err
		}
	} else {
		word := "VALID"
		if !v.Valid {
			word = "NOT VALID"
		}
		fmt.Fprintf(o.stdout, "%s at %s: %s: %s\n", what, at.UTC().Format(time.RFC3339Nano), word, v.Reason)
	}
	if !v.Valid {
		return errFailed
	}
	return nil
}

type accessClaims struct {
	jwt.RegisteredClaims
	Sid string `json:"sid"`
}

// verifyAccessToken checks an access token's signature against the keys
// recorded in the log (published, active or retired ever), not against a
// live JWKS: an audit must work for past keys too.
func (o *options) verifyAccessToken(ctx context.Context, token string) (*accessClaims, error) {
	keys := projections.NewKeys()
	recs, err := o.records(ctx, []string{o.log.Subjects().Keys()})
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if m, err := events.Decode(r); err == nil {
			keys.Apply(r, m)
		}
	}
	var c accessClaims
	_, err = jwt.NewParser(jwt.WithValidMethods([]string{"RS256", "PS256", "ES256", "ES384", "EdDSA"}),
		jwt.WithoutClaimsValidation(), jwt.WithStrictDecoding()).ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := keys.Get(kid)
		if !ok {
			return nil, errors.New("signed by a key this log never held")
		}
		return k.JWK.PublicKey()
	})
	if err != nil {
		return nil, fmt.Errorf("access token does not verify: %v", err)
	}
	if c.IssuedAt == nil || c.ExpiresAt == nil || c.Sid == "" {
		return nil, errors.New("access token lacks iat, exp or sid")
	}
	return &c, nil
}
