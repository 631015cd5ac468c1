package issuer_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

func TestParseReason(t *testing.T) {
	t.Parallel()
	def := eventsv1.RevocationReason_REVOCATION_REASON_CLIENT
	tests := []struct {
		name    string
		in      string
		want    issuer.Reason
		wantErr error
	}{
		{"empty is the default", "", issuer.Reason{Code: def}, nil},
		{"a name of the set", "admin", issuer.Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_ADMIN, Text: "admin"}, nil},
		{"key compromise", "key_compromise", issuer.Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE, Text: "key_compromise"}, nil},
		{"the caller's words", "logout", issuer.Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_OTHER, Text: "logout"}, nil},
		{"password change", "password_change", issuer.Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_OTHER, Text: "password_change"}, nil},
		{"words with spaces and accents", "départ de l'employé", issuer.Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_OTHER, Text: "départ de l'employé"}, nil},
		{"reuse is the service's own", "reuse", issuer.Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_OTHER, Text: "reuse"}, nil},
		{"a name is case-sensitive", "Admin", issuer.Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_OTHER, Text: "Admin"}, nil},
		{"at the bound", strings.Repeat("r", issuer.MaxReasonLen), issuer.Reason{Code: eventsv1.RevocationReason_REVOCATION_REASON_OTHER, Text: strings.Repeat("r", issuer.MaxReasonLen)}, nil},
		{"over the bound", strings.Repeat("r", issuer.MaxReasonLen+1), issuer.Reason{}, issuer.ErrInvalidRequest},
		{"a line break", "logout\nlevel=error", issuer.Reason{}, issuer.ErrInvalidRequest},
		{"an escape", "logout\x1b[2J", issuer.Reason{}, issuer.ErrInvalidRequest},
		{"not UTF-8", "logout\xff", issuer.Reason{}, issuer.ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := issuer.ParseReason(tt.in, def)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseReason(%q): error %v, want %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("ParseReason(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

// revocations records Observer.Revoked labels.
type revocations struct {
	mu     sync.Mutex
	labels map[string]int
}

func (*revocations) Issued(string, string) {}
func (*revocations) FallbackSigned()       {}
func (*revocations) Refreshed(string)      {}
func (*revocations) SecurityEvent(string)  {}

func (r *revocations) Revoked(reason string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.labels == nil {
		r.labels = map[string]int{}
	}
	r.labels[reason] += n
}

// TestRevokeInTheCallersWords: a reason outside the set is accepted, kept
// word for word on the family and subject events, and counted as other.
func TestRevokeInTheCallersWords(t *testing.T) {
	obs := &revocations{}
	env := issuertest.New(t, issuertest.Options{Observer: obs})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "alice", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := env.Issuer.Revoke(ctx, issuer.RevokeRequest{Target: issuer.TargetFamily, Value: tok.FamilyID, Reason: "logout"}); err != nil || n != 1 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	rec, err := env.Log.LastConsistent(ctx, env.Log.Subjects().Family(tok.FamilyID, "revoked"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := events.Decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	fr, ok := m.(*eventsv1.FamilyRevoked)
	if !ok || fr.GetReasonText() != "logout" || fr.GetReason() != eventsv1.RevocationReason_REVOCATION_REASON_OTHER ||
		fr.GetState().GetRevokedReason() != eventsv1.RevocationReason_REVOCATION_REASON_OTHER {
		t.Fatalf("family event %T %v, want reason other with text logout", m, m)
	}

	if _, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "bob", ClientID: "web", Audience: []string{"api"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := env.Issuer.Revoke(ctx, issuer.RevokeRequest{Target: issuer.TargetSubject, Value: "bob", Reason: "password_change"}); err != nil || n != 1 {
		t.Fatalf("revoke subject: %d %v", n, err)
	}
	rec, err = env.Log.LastConsistent(ctx, env.Log.Subjects().SubjectRevoked(issuer.SubjectHash("bob")))
	if err != nil {
		t.Fatal(err)
	}
	if m, err = events.Decode(rec); err != nil {
		t.Fatal(err)
	}
	if sr, ok := m.(*eventsv1.SubjectRevoked); !ok || sr.GetReasonText() != "password_change" || sr.GetReason() != eventsv1.RevocationReason_REVOCATION_REASON_OTHER {
		t.Fatalf("subject event %T %v, want reason other with text password_change", m, m)
	}

	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.labels["other"] != 2 || len(obs.labels) != 1 {
		t.Fatalf("revocations counted %v, want other: 2", obs.labels)
	}
	for l := range obs.labels {
		found := false
		for _, known := range issuer.ReasonLabels {
			found = found || known == l
		}
		if !found {
			t.Errorf("label %q is not in ReasonLabels", l)
		}
	}
}
