package keyring_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing/keyring"
)

// TestCompromiseIsOneCommand: the compromise is declared, the key
// replaced and destroyed, the families it signed revoked and the
// compromise resolved, in that order in the log.
func TestCompromiseIsOneCommand(t *testing.T) {
	t.Parallel()
	env := issuertest.New(t, issuertest.Options{})
	ctx := context.Background()
	toks := generate(t, env, 3)
	c, err := env.Responder.Compromise(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Previous != toks[0].KeyID || c.KeyID == c.Previous || c.RevokedFamilies != 3 {
		t.Fatalf("containment %+v, want the old key %s replaced and 3 families revoked", c, toks[0].KeyID)
	}
	if cur, _ := env.Set.ActiveKey(); cur.ID != c.KeyID {
		t.Fatalf("active key %s, want %s", cur.ID, c.KeyID)
	}
	assertContained(t, env, c.Previous, toks)
	types := keyEventTypes(t, env, c.Previous)
	for len(types) > 0 && types[0] != events.TypeKeyCompromiseDeclared {
		types = types[1:] // its lifecycle before the incident
	}
	want := []string{events.TypeKeyCompromiseDeclared, events.TypeKeyRetired, events.TypeKeyDestroyed, events.TypeKeyCompromiseResolved}
	if !equal(types, want) {
		t.Fatalf("events of the compromised key %v, want %v", types, want)
	}
	resolved := compromiseResolutions(t, env, c.Previous)
	if len(resolved) != 1 || resolved[0].GetNewKeyId() != c.KeyID || resolved[0].GetRevokedFamilies() != 3 {
		t.Fatalf("resolutions %v", resolved)
	}
	// Nothing is left to resume.
	before := env.LastSeq(t)
	if err := env.Responder.Resume(ctx); err != nil || env.LastSeq(t) != before {
		t.Fatalf("idle Resume: %v, %d new events", err, env.LastSeq(t)-before)
	}
}

// crashingRevoker revokes family fid and then fails, as a process killed
// part-way through the revocation of a compromised key's families.
type crashingRevoker struct {
	is  *issuer.Issuer
	fid string
}

var errCrash = errors.New("crash injected")

func (r crashingRevoker) RevokeSignedBy(ctx context.Context, _ string) (int, error) {
	n, err := r.is.RevokeFamily(ctx, r.fid, eventsv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE)
	if err != nil {
		return n, err
	}
	return n, errCrash
}

// TestCompromiseFinishedAfterCrashBetweenRotateAndRevoke: the command
// fails after the rotation, part-way through the revocation; the next
// start of a replica finishes the revocation and resolves the compromise.
func TestCompromiseFinishedAfterCrashBetweenRotateAndRevoke(t *testing.T) {
	t.Parallel()
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	ctx := context.Background()
	toks := generate(t, env, 3)
	c, err := keyring.NewResponder(env.Keyring, crashingRevoker{is: env.Issuer, fid: toks[0].FamilyID}).Compromise(ctx, true)
	if !errors.Is(err, errCrash) {
		t.Fatalf("compromise: %v, want the injected crash", err)
	}
	if c.Previous != toks[0].KeyID || c.KeyID == c.Previous || c.RevokedFamilies != 1 {
		t.Fatalf("containment %+v", c)
	}
	env.CaughtUp(t)
	if p := env.Set.PendingCompromises(); len(p) != 1 || p[0].KeyID != c.Previous || !p[0].RevokeFamilies {
		t.Fatalf("pending compromises %+v, want the declared one", p)
	}
	if f, ok := env.Set.Family(toks[1].FamilyID); !ok || f.Revoked {
		t.Fatalf("family %s is revoked before the restart; the test crashed too late", f.ID)
	}

	restarted := issuertest.New(t, issuertest.Options{Conn: node.Conn, Clock: env.Clock})
	assertContained(t, restarted, c.Previous, toks)
	resolved := compromiseResolutions(t, restarted, c.Previous)
	if len(resolved) != 1 || resolved[0].GetNewKeyId() != c.KeyID || resolved[0].GetRevokedFamilies() != 2 {
		t.Fatalf("resolutions %v, want one naming %s and the 2 families revoked after the restart", resolved, c.KeyID)
	}
	if n := revocations(t, restarted); n != 3 {
		t.Fatalf("%d family.revoked events, want 3 (each family once)", n)
	}
}

// TestCompromiseFinishedAfterCrashAfterIntent: a replica recorded the
// declaration and died. A restart rotates (destroying the key staged
// before the incident too), revokes and resolves; two replicas resuming
// at once revoke each family once and resolve once.
func TestCompromiseFinishedAfterCrashAfterIntent(t *testing.T) {
	t.Parallel()
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	ctx := context.Background()
	toks := generate(t, env, 3)
	staged, err := env.Keyring.Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	old := toks[0].KeyID
	ev, err := events.Key(env.Log.Subjects(), old, &eventsv1.KeyCompromiseDeclared{KeyId: old, At: timestamppb.New(env.Clock.Now()), RevokeFamilies: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Log.AppendNext(ctx, ev, env.Log.Subjects().Keys()); err != nil {
		t.Fatal(err)
	}

	// Two replicas start at once; each resumes the compromise.
	envs := startReplicas(t, node, 2, issuertest.Options{Clock: env.Clock})
	restarted := envs[0]
	restarted.CaughtUp(t)
	cur, ok := restarted.Set.ActiveKey()
	if !ok || cur.ID == old || cur.ID == staged.KeyID {
		t.Fatalf("active key %s, want a fresh one (compromised %s, staged before %s)", cur.ID, old, staged.KeyID)
	}
	if k, _ := restarted.Set.Key(staged.KeyID); k.Status != eventsv1.KeyStatus_KEY_STATUS_DESTROYED {
		t.Fatalf("the key staged before the incident is %v, want destroyed", k.Status)
	}
	assertContained(t, restarted, old, toks)
	if r := compromiseResolutions(t, restarted, old); len(r) != 1 || r[0].GetNewKeyId() != cur.ID {
		t.Fatalf("resolutions %v, want one naming %s", r, cur.ID)
	}
	if n := revocations(t, restarted); n != 3 {
		t.Fatalf("%d family.revoked events, want 3 (each family once)", n)
	}
}

// startReplicas starts n replicas on node at once, each with its own
// connection and the options o.
func startReplicas(t *testing.T, node *eventlogtest.Node, n int, o issuertest.Options) []*issuertest.Env {
	t.Helper()
	envs := make([]*issuertest.Env, n)
	var wg sync.WaitGroup
	for i := range envs {
		nc, err := node.Embedded.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		ro := o
		ro.Conn = nc
		wg.Go(func() { envs[i] = issuertest.New(t, ro) })
	}
	wg.Wait()
	return envs
}

func generate(t *testing.T, env *issuertest.Env, n int) []issuer.Tokens {
	t.Helper()
	var toks []issuer.Tokens
	for range n {
		tok, err := env.Issuer.Generate(context.Background(), issuer.GenerateRequest{Subject: "v", ClientID: "c", Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	return toks
}

// assertContained checks that key kid left the JWKS, no compromise is
// pending, and no family of toks refreshes.
func assertContained(t *testing.T, env *issuertest.Env, kid string, toks []issuer.Tokens) {
	t.Helper()
	env.CaughtUp(t)
	if k, _ := env.Set.Key(kid); k.Status != eventsv1.KeyStatus_KEY_STATUS_DESTROYED {
		t.Fatalf("compromised key is %v, want destroyed", k.Status)
	}
	if jwksKids(env)[kid] {
		t.Fatal("the compromised key is still in the JWKS")
	}
	if p := env.Set.PendingCompromises(); len(p) != 0 {
		t.Fatalf("pending compromises %+v", p)
	}
	for _, tok := range toks {
		_, err := env.Issuer.Refresh(context.Background(), issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "c"})
		if !errors.Is(err, issuer.ErrFamilyRevoked) {
			t.Fatalf("refresh of family %s after the compromise: %v", tok.FamilyID, err)
		}
	}
}

func records(t *testing.T, env *issuertest.Env, filter string) []eventlog.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []eventlog.Record
	if err := env.Log.Replay(ctx, 1, []string{filter}, func(r eventlog.Record) { out = append(out, r) }); err != nil {
		t.Fatal(err)
	}
	return out
}

func keyEventTypes(t *testing.T, env *issuertest.Env, kid string) []string {
	t.Helper()
	var out []string
	for _, r := range records(t, env, env.Log.Subjects().Key(kid, "*")) {
		out = append(out, r.Type)
	}
	return out
}

func compromiseResolutions(t *testing.T, env *issuertest.Env, kid string) []*eventsv1.KeyCompromiseResolved {
	t.Helper()
	var out []*eventsv1.KeyCompromiseResolved
	for _, r := range records(t, env, env.Log.Subjects().Key(kid, "compromise_resolved")) {
		m, err := events.Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.(*eventsv1.KeyCompromiseResolved))
	}
	return out
}

func revocations(t *testing.T, env *issuertest.Env) int {
	t.Helper()
	return len(records(t, env, env.Log.Subjects().Prefix()+".family.*.revoked"))
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
