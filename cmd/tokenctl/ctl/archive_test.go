package ctl_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// TestArchiveOutlivesRetention: with EVENT_RETENTION of a second, a family
// archived by tokenctl export --archive and then expired from the stream
// is still audited from the archive (with its MACs checked: a tampered
// line is refused), and the signing keys, whose events never expire, are
// still served after a restart that replays the log.
func TestArchiveOutlivesRetention(t *testing.T) {
	dataDir := t.TempDir()
	vars := map[string]string{"DATA_DIR": dataDir, "EVENT_RETENTION": "1", "ACCESS_TOKEN_TTL": "1", "REFRESH_TOKEN_TTL": "2"}
	e := startWith(t, vars)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := e.client.GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "archived", ClientId: "web", Audience: []string{"api"}}))
	if err != nil {
		t.Fatal(err)
	}
	fid := r.Msg.GetFamilyId()
	rot, err := e.client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: r.Msg.GetRefreshToken(), ClientId: "web"}))
	if err != nil {
		t.Fatal(err)
	}
	between := time.Now()
	if _, err := e.client.RevokeToken(ctx, withCorr(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_RefreshToken{RefreshToken: rot.Msg.GetRefreshToken()}}, "corr-archived")); err != nil {
		t.Fatal(err)
	}
	jwks := func(e *env) []string {
		res, err := e.client.GetJWKS(ctx, connect.NewRequest(&tokenv1.GetJWKSRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var kids []string
		for _, k := range res.Msg.GetKeys() {
			kids = append(kids, k.GetKid())
		}
		return kids
	}
	kids := jwks(e)

	archive := t.TempDir()
	code, out, errOut := e.run(t, "--archive", archive, "export")
	name := strings.TrimSpace(out)
	if code != 0 || !regexp.MustCompile(`/TOKENS-0{19}1-\d{20}\.jsonl$`).MatchString(name) {
		t.Fatalf("export --archive (exit %d): %q %s", code, out, errOut)
	}

	// The family's events leave the stream: refresh expiry plus the
	// retention, the server's whole seconds and its expiry sweep.
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _, errOut := e.run(t, "audit", "family", fid)
		if code == 1 && strings.Contains(errOut, "no family") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the family is still in the stream (exit %d): %s", code, errOut)
		}
		time.Sleep(250 * time.Millisecond)
	}

	code, out, errOut = e.run(t, "--archive", archive, "--json", "audit", "family", fid)
	got := lines(t, out)
	if code != 0 || len(got) != 3 || got[0]["type"] != "family.issued" || got[1]["type"] != "family.rotated" ||
		got[2]["type"] != "family.revoked" || got[2]["reason"] != "client" || got[2]["correlation_id"] != "corr-archived" {
		t.Fatalf("audit from the archive (exit %d):\n%s%s", code, out, errOut)
	}
	code, out, _ = e.run(t, "--archive", archive, "audit", "at", between.UTC().Format(time.RFC3339Nano), fid)
	if code != 0 || !strings.Contains(out, "VALID: active: generation 2") {
		t.Fatalf("audit at, between rotation and revocation (exit %d): %s", code, out)
	}
	code, out, _ = e.run(t, "--archive", archive, "audit", "subject", "archived")
	if code != 0 || !strings.Contains(out, fid) {
		t.Fatalf("audit subject from the archive (exit %d): %s", code, out)
	}

	// A tampered archive line is refused by its MAC, like a forged record
	// of the stream: the revocation is not believed.
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var tampered []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if strings.Contains(l, ".family."+fid+".revoked") {
			l = strings.Replace(l, `"corr-archived"`, `"corr-forged!!"`, 1)
		}
		tampered = append(tampered, l)
	}
	if err := os.WriteFile(name, []byte(strings.Join(tampered, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = e.run(t, "--archive", archive, "--json", "audit", "family", fid)
	if got := lines(t, out); code != 0 || len(got) != 2 || !strings.Contains(errOut, "FORGED") {
		t.Fatalf("audit of a tampered archive (exit %d):\n%s%s", code, out, errOut)
	}

	// The next export continues after the first one's range.
	code, out, errOut = e.run(t, "--archive", archive, "export")
	files, _ := filepath.Glob(filepath.Join(archive, "TOKENS-*.jsonl"))
	if code != 0 || (strings.TrimSpace(out) != "" && len(files) != 2) {
		t.Fatalf("second export (exit %d): %q %s, files %v", code, out, errOut, files)
	}

	// Keys survive the window: a restart replays the log and serves the
	// same JWKS.
	if err := e.m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	e2 := startWith(t, vars)
	if again := jwks(e2); len(kids) == 0 || strings.Join(again, ",") != strings.Join(kids, ",") {
		t.Fatalf("JWKS after the window and a restart: %v, before: %v", again, kids)
	}
}
