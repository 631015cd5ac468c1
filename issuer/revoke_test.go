package issuer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

func TestRevokeTargets(t *testing.T) {
	env := issuertest.New(t, issuertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gen := func(subject string) issuer.Tokens {
		tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: subject, ClientID: "web", Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	client := eventsv1.RevocationReason_REVOCATION_REASON_CLIENT
	tests := []struct {
		name   string
		revoke func(issuer.Tokens) (int, error)
		want   int
	}{
		{"refresh token", func(tk issuer.Tokens) (int, error) {
			return env.Issuer.RevokeRefreshToken(ctx, tk.RefreshToken, client)
		}, 1},
		{"family", func(tk issuer.Tokens) (int, error) { return env.Issuer.RevokeFamily(ctx, tk.FamilyID, client) }, 1},
		{"access token", func(tk issuer.Tokens) (int, error) { return env.Issuer.RevokeAccessToken(ctx, tk.AccessToken, client) }, 1},
		{"garbage refresh token", func(issuer.Tokens) (int, error) { return env.Issuer.RevokeRefreshToken(ctx, "garbage", client) }, 0},
		{"guessed secret", func(tk issuer.Tokens) (int, error) {
			return env.Issuer.RevokeRefreshToken(ctx, tk.FamilyID+"."+b64(make([]byte, 32)), client)
		}, 0},
		{"unknown family", func(issuer.Tokens) (int, error) { return env.Issuer.RevokeFamily(ctx, b64(make([]byte, 16)), client) }, 0},
		{"malformed family", func(issuer.Tokens) (int, error) { return env.Issuer.RevokeFamily(ctx, "token.>", client) }, 0},
		{"tampered access token", func(tk issuer.Tokens) (int, error) {
			return env.Issuer.RevokeAccessToken(ctx, tk.AccessToken[:len(tk.AccessToken)-4]+"AAAA", client)
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := gen("alice")
			before := env.LastSeq(t)
			n, err := tc.revoke(tok)
			if err != nil {
				t.Fatalf("revoke: %v (RFC 7009: unknown tokens are not errors)", err)
			}
			if n != tc.want {
				t.Fatalf("revoked %d families, want %d", n, tc.want)
			}
			if appended := env.LastSeq(t) - before; appended != uint64(tc.want) {
				t.Fatalf("appended %d events, want %d", appended, tc.want)
			}
			_, err = env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "web"})
			if tc.want == 1 && !errors.Is(err, issuer.ErrFamilyRevoked) {
				t.Fatalf("refresh after revocation: %v, want ErrFamilyRevoked", err)
			}
			if tc.want == 0 && err != nil {
				t.Fatalf("refresh after a no-op revocation: %v", err)
			}
			// Revoking again is a no-op.
			if n, err := tc.revoke(tok); err != nil || n != 0 {
				t.Fatalf("second revoke: %d, %v", n, err)
			}
		})
	}
}

// TestRevokeSubjectStopsConcurrentFamilies starts families of one subject
// while the subject is revoked. Whatever the interleaving, every family
// whose issued event precedes the cut-off in the log never refreshes after
// RevokeSubject returned, and families issued after it are untouched.
func TestRevokeSubjectStopsConcurrentFamilies(t *testing.T) {
	env := issuertest.New(t, issuertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const subject = "bob@example.com"
	var mu sync.Mutex
	var fams []issuer.Tokens
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: subject, ClientID: "web", Audience: []string{"api"}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				fams = append(fams, tok)
				mu.Unlock()
			}
		}()
	}
	// Let some families exist, then revoke while more are being issued.
	for {
		mu.Lock()
		n := len(fams)
		mu.Unlock()
		if n >= 20 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	revoked, err := env.Issuer.RevokeSubject(ctx, subject, eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT)
	if err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	cut, err := env.Log.LastConsistent(ctx, env.Log.Subjects().SubjectRevoked(issuer.SubjectHash(subject)))
	if err != nil {
		t.Fatal(err)
	}
	before, after := 0, 0
	for _, tok := range fams {
		rec, err := env.Log.LastConsistent(ctx, env.Log.Subjects().Family(tok.FamilyID, "issued"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "web"})
		if rec.Seq < cut.Seq {
			before++
			if !errors.Is(err, issuer.ErrFamilyRevoked) {
				t.Fatalf("family issued at %d before the cut-off at %d refreshed: %v", rec.Seq, cut.Seq, err)
			}
		} else {
			after++
			if err != nil {
				t.Fatalf("family issued after the cut-off was refused: %v", err)
			}
		}
	}
	if revoked == 0 || revoked > before {
		t.Fatalf("RevokeSubject revoked %d families, %d were issued before the cut-off", revoked, before)
	}
	t.Logf("%d families before the cut-off (%d revoked by the call, the rest on refresh), %d after", before, revoked, after)
}
