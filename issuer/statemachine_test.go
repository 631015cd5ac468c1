package issuer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

const (
	smGrace      = 30 * time.Second
	smRefreshTTL = 10 * time.Minute
)

// modelFamily is what the test expects of one family.
type modelFamily struct {
	id        string
	client    string
	tokens    []string // refresh token of each generation, oldest first
	revoked   bool
	rotatedAt time.Time
	last      issuer.Tokens // response of the last issue or rotation
	graceUsed bool          // the last rotation's successor went to a presentation of the previous token
}

func (f *modelFamily) current() string { return f.tokens[len(f.tokens)-1] }

// familyMachine drives the issuer with any interleaving of issue, refresh
// (current, previous, older, guessed, wrong client), revoke and clock
// advance, and checks every answer against the model and the log.
type familyMachine struct {
	env      *issuertest.Env
	ctx      context.Context
	run      int
	families []*modelFamily
}

func (m *familyMachine) pick(t *rapid.T) *modelFamily {
	if len(m.families) == 0 {
		t.Skip("no family yet")
	}
	return rapid.SampledFrom(m.families).Draw(t, "family")
}

func (m *familyMachine) Issue(t *rapid.T) {
	client := rapid.SampledFrom([]string{"web", "mobile"}).Draw(t, "client")
	tok, err := m.env.Issuer.Generate(m.ctx, issuer.GenerateRequest{
		Subject: fmt.Sprintf("user-%d-%d", m.run, len(m.families)), ClientID: client,
		Audience: []string{"api"}, Scopes: []string{"read", "write"},
	})
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	m.families = append(m.families, &modelFamily{id: tok.FamilyID, client: client, tokens: []string{tok.RefreshToken},
		rotatedAt: m.env.Clock.Now(), last: tok})
}

func (m *familyMachine) refresh(token, client string) (issuer.Tokens, error) {
	return m.env.Issuer.Refresh(m.ctx, issuer.RefreshRequest{RefreshToken: token, ClientID: client})
}

func (m *familyMachine) expired(f *modelFamily) bool {
	return m.env.Clock.Now().After(f.rotatedAt.Add(smRefreshTTL))
}

func (m *familyMachine) inGrace(f *modelFamily) bool {
	return len(f.tokens) > 1 && !m.env.Clock.Now().After(f.rotatedAt.Add(smGrace))
}

func (m *familyMachine) RefreshCurrent(t *rapid.T) {
	f := m.pick(t)
	tok, err := m.refresh(f.current(), f.client)
	switch {
	case f.revoked:
		wantErr(t, err, issuer.ErrFamilyRevoked)
	case m.expired(f):
		wantErr(t, err, issuer.ErrTokenExpired)
	default:
		if err != nil {
			t.Fatalf("refresh current of %s: %v", f.id, err)
		}
		if tok.FamilyID != f.id || tok.RefreshToken == f.current() {
			t.Fatalf("rotation returned %s / same token", tok.FamilyID)
		}
		f.tokens = append(f.tokens, tok.RefreshToken)
		f.rotatedAt = m.env.Clock.Now()
		f.last = tok
		f.graceUsed = false
	}
}

func (m *familyMachine) RefreshPrevious(t *rapid.T) {
	f := m.pick(t)
	if len(f.tokens) < 2 {
		t.Skip("no previous token")
	}
	tok, err := m.refresh(f.tokens[len(f.tokens)-2], f.client)
	switch {
	case f.revoked:
		wantErr(t, err, issuer.ErrFamilyRevoked)
	case m.inGrace(f) && !f.graceUsed:
		if err != nil {
			t.Fatalf("previous token inside the grace window: %v", err)
		}
		// The same successor, not a new sibling.
		if tok.RefreshToken != f.last.RefreshToken || tok.AccessToken != f.last.AccessToken {
			t.Fatalf("grace returned another response")
		}
		f.graceUsed = true
	default:
		// Outside the window, or a second presentation inside it (the
		// successor is handed out once): a replay.
		wantErr(t, err, issuer.ErrTokenReused)
		f.revoked = true
	}
}

func (m *familyMachine) RefreshOlder(t *rapid.T) {
	f := m.pick(t)
	if len(f.tokens) < 3 {
		t.Skip("no older token")
	}
	i := rapid.IntRange(0, len(f.tokens)-3).Draw(t, "generation")
	_, err := m.refresh(f.tokens[i], f.client)
	if f.revoked {
		wantErr(t, err, issuer.ErrFamilyRevoked)
		return
	}
	// Older than the previous: a replay even inside the grace window.
	wantErr(t, err, issuer.ErrTokenReused)
	f.revoked = true
}

func (m *familyMachine) RefreshGuessed(t *rapid.T) {
	f := m.pick(t)
	secret := rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "secret")
	guess := f.id + "." + b64(secret)
	before := m.env.LastSeq(t)
	_, err := m.refresh(guess, f.client)
	wantErr(t, err, issuer.ErrUnknownToken)
	if after := m.env.LastSeq(t); after != before {
		t.Fatalf("a guessed token appended %d events", after-before)
	}
}

func (m *familyMachine) RefreshWrongClient(t *rapid.T) {
	f := m.pick(t)
	before := m.env.LastSeq(t)
	_, err := m.refresh(f.current(), f.client+"-other")
	wantErr(t, err, issuer.ErrClientMismatch)
	if after := m.env.LastSeq(t); after != before {
		t.Fatalf("a wrong client appended %d events", after-before)
	}
}

func (m *familyMachine) Revoke(t *rapid.T) {
	f := m.pick(t)
	n, err := m.env.Issuer.RevokeFamily(m.ctx, f.id, eventsv1.RevocationReason_REVOCATION_REASON_CLIENT)
	if err != nil {
		t.Fatal(err)
	}
	want := 1
	if f.revoked {
		want = 0
	}
	if n != want {
		t.Fatalf("revoke of %s revoked %d, want %d", f.id, n, want)
	}
	f.revoked = true
}

func (m *familyMachine) Advance(t *rapid.T) {
	d := rapid.SampledFrom([]time.Duration{time.Second, smGrace / 2, smGrace, smGrace + time.Second, smRefreshTTL + time.Second}).Draw(t, "advance")
	m.env.Clock.Advance(d)
}

// Check compares every family in the log with the model: same generation
// and status, hence at most one live refresh token (the one whose hash is
// the state's current hash, which the model's current token must match).
func (m *familyMachine) Check(t *rapid.T) {
	for _, f := range m.families {
		rec, err := m.env.Log.LastConsistent(m.ctx, m.env.Log.Subjects().FamilyFilter(f.id))
		if err != nil {
			t.Fatalf("family %s: %v", f.id, err)
		}
		st := stateOf(t, rec)
		if st.GetGeneration() != uint64(len(f.tokens)) {
			t.Fatalf("family %s: generation %d, model %d", f.id, st.GetGeneration(), len(f.tokens))
		}
		if revoked := st.GetStatus() == eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED; revoked != f.revoked {
			t.Fatalf("family %s: revoked %v, model %v", f.id, revoked, f.revoked)
		}
	}
}

func TestFamilyStateMachine(t *testing.T) {
	env := issuertest.New(t, issuertest.Options{Grace: smGrace, RefreshTTL: smRefreshTTL})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := 0
	// Four rounds of -rapid.checks runs each: the grace boundary needs a
	// few hundred runs to be met reliably (a bug that halves the window
	// was caught at run 36 of 200).
	for range 4 {
		rapid.Check(t, func(t *rapid.T) {
			run++
			t.Repeat(rapid.StateMachineActions(&familyMachine{env: env, ctx: ctx, run: run}))
		})
	}
}

func wantErr(t interface{ Fatalf(string, ...any) }, err, want error) {
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}
