package keyring_test

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/local"
)

// TestReplicasRaceToCreateTheKey: four replicas start at once on an empty
// log; they end with one active key, the same everywhere.
func TestReplicasRaceToCreateTheKey(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	envs := make([]*issuertest.Env, 4)
	var wg sync.WaitGroup
	for i := range envs {
		nc, err := node.Embedded.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		wg.Add(1)
		go func() {
			defer wg.Done()
			envs[i] = issuertest.New(t, issuertest.Options{Conn: nc, Clock: clock, Algorithm: signing.EdDSA})
		}()
	}
	wg.Wait()
	for _, e := range envs {
		e.CaughtUp(t)
	}
	keys, _ := envs[0].Set.Keys()
	if len(keys) != 1 {
		t.Fatalf("%d keys after the race, want 1", len(keys))
	}
	for i, e := range envs {
		k, ok := e.Set.ActiveKey()
		if !ok || k.ID != keys[0].ID {
			t.Fatalf("replica %d: active %v %v, want %s", i, k.ID, ok, keys[0].ID)
		}
		if e.Set.Digest() != envs[0].Set.Digest() {
			t.Fatalf("replica %d holds other key state", i)
		}
	}
}

// TestAlgorithmChangeRotates: a new algorithm gets a new key; the old key
// is retired but stays in the JWKS, so its tokens keep verifying.
func TestAlgorithmChangeRotates(t *testing.T) {
	env := issuertest.New(t, issuertest.Options{Algorithm: signing.ES256})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "a", ClientID: "c", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	kid, err := env.Keyring.EnsureActive(ctx, signing.PS256)
	if err != nil {
		t.Fatal(err)
	}
	if kid == old.KeyID {
		t.Fatal("no new key")
	}
	env.CaughtUp(t)
	keys, _ := env.Set.Keys()
	if len(keys) != 2 || keys[0].Status != eventsv1.KeyStatus_KEY_STATUS_RETIRED || keys[1].Status != eventsv1.KeyStatus_KEY_STATUS_ACTIVE {
		for _, k := range keys {
			t.Logf("key %s %s %v", k.ID, k.Algorithm, k.Status)
		}
		t.Fatal("want the old key retired and the new one active")
	}
	if len(env.Set.JWKS()) != 2 {
		t.Fatalf("JWKS has %d keys, want the retired one too", len(env.Set.JWKS()))
	}
	if _, err := env.Issuer.VerifyAccessToken(old.AccessToken, true); err != nil {
		t.Fatalf("token of the retired key: %v", err)
	}
	fresh, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "a", ClientID: "c", Audience: []string{"api"}})
	if err != nil || fresh.KeyID != kid {
		t.Fatalf("new token signed by %s (%v), want %s", fresh.KeyID, err, kid)
	}
	// Asking again changes nothing.
	before := env.LastSeq(t)
	if again, err := env.Keyring.EnsureActive(ctx, signing.PS256); err != nil || again != kid || env.LastSeq(t) != before {
		t.Fatalf("second EnsureActive: %s %v, %d new events", again, err, env.LastSeq(t)-before)
	}
}

// TestResumesInterruptedCreation: a crash after "generated" (before
// "activated") leaves a key that the next start adopts instead of making
// another.
func TestResumesInterruptedCreation(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	log := eventlogtest.OpenLog(t, node.Conn, eventlog.Config{})
	s, err := local.Generate(rand.Reader, signing.ES384)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := s.Marshal()
	env0 := issuertest.New(t, issuertest.Options{Conn: node.Conn, Algorithm: signing.ES256})
	sealed, err := env0.Sealer.Seal(der, []byte(s.KeyID()))
	if err != nil {
		t.Fatal(err)
	}
	j := s.PublicJWK()
	data, _ := proto.Marshal(&eventsv1.KeyGenerated{KeyId: s.KeyID(), Algorithm: "ES384", Backend: "local",
		PublicKey:        &eventsv1.PublicKey{Kty: j.Kty, Kid: j.Kid, Alg: j.Alg, Crv: j.Crv, X: j.X, Y: j.Y},
		SealedPrivateKey: sealed, At: timestamppb.Now()})
	ctx := context.Background()
	head, err := log.LastConsistent(ctx, log.Subjects().Keys())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := log.Append(ctx, eventlog.Event{Subject: log.Subjects().Key(s.KeyID(), "generated"), Type: projections.TypeKeyGenerated, Data: data},
		eventlog.Expect{Filter: log.Subjects().Keys(), Seq: head.Seq}); err != nil {
		t.Fatal(err)
	}
	// The "restart": a replica configured for ES384.
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn, Algorithm: signing.ES384})
	k, ok := env.Set.ActiveKey()
	if !ok || k.ID != s.KeyID() {
		t.Fatalf("active key %s, want the interrupted %s", k.ID, s.KeyID())
	}
	keys, _ := env.Set.Keys()
	if len(keys) != 2 {
		t.Fatalf("%d keys, want 2 (the ES256 one retired, the adopted ES384 one)", len(keys))
	}
}
