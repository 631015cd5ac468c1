package projections_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// cacheCount is a CacheObserver that counts by operation and status.
type cacheCount struct {
	mu sync.Mutex
	n  map[[2]string]int
}

var _ projections.CacheObserver = (*cacheCount)(nil)

func (c *cacheCount) CacheOperation(op, status string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[[2]string]int{}
	}
	c.n[[2]string{op, status}]++
}

func (c *cacheCount) get(op, status string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[[2]string{op, status}]
}

// Values that must never appear in clear in the bucket.
const (
	sealedSubject  = "subject-in-clear-7d1e@example.com"
	sealedClient   = "client-in-clear-5b2c"
	sealedScope    = "scope-in-clear-9a4f"
	sealedAudience = "https://audience-in-clear-3c8d.example"
	sealedClaim    = "claim-in-clear-e61b"
)

// generateSecret issues a family whose every field is recognisable.
func generateSecret(t *testing.T, env *issuertest.Env, subject string) issuer.Tokens {
	t.Helper()
	extra, err := structpb.NewStruct(map[string]any{"department": sealedClaim})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := env.Issuer.Generate(context.Background(), issuer.GenerateRequest{Subject: subject, ClientID: sealedClient,
		Audience: []string{sealedAudience}, Scopes: []string{sealedScope}, Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawValues returns every message the bucket's stream holds, by subject.
func rawValues(t *testing.T, js jetstream.JetStream) map[string][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "KV_"+projections.FamilyBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out[m.Subject] = m.Data
	}
	return out
}

// checkNoClearText fails t if a value of the bucket holds a field of a
// family in clear.
func checkNoClearText(t *testing.T, js jetstream.JetStream, subjects ...string) {
	t.Helper()
	raw := rawValues(t, js)
	if len(raw) == 0 {
		t.Fatal("the bucket holds no value")
	}
	for subj, v := range raw {
		for _, clear := range append([]string{sealedClient, sealedScope, sealedAudience, sealedClaim}, subjects...) {
			if bytes.Contains(v, []byte(clear)) || bytes.Contains([]byte(subj), []byte(clear)) {
				t.Fatalf("%s holds %q in clear", subj, clear)
			}
		}
	}
}

// TestFamilyModelSealed: the bucket on the server holds no subject,
// client, audience, scope or claim in clear; ListFamilies still reads it;
// the bucket says its values are sealed; every operation is counted.
func TestFamilyModelSealed(t *testing.T) {
	t.Parallel()
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	var obs cacheCount
	store := newStore(t, env, &obs)
	startProjectorWith(t, node, projections.ProjectorConfig{Sealer: env.Sealer, Observer: &obs})

	subjects := []string{sealedSubject, "second-" + sealedSubject}
	for _, s := range subjects {
		tok := generateSecret(t, env, s)
		if _, err := env.Issuer.Refresh(context.Background(), issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: sealedClient}); err != nil {
			t.Fatal(err)
		}
		generateSecret(t, env, s)
	}
	env.CaughtUp(t)
	waitModel(t, env, store)
	checkModel(t, env, store, subjects)
	recs, err := store.ListFamilies(context.Background(), sealedSubject)
	if err != nil || len(recs) != 2 {
		t.Fatalf("ListFamilies: %d, %v", len(recs), err)
	}
	st := recs[0].GetState()
	if st.GetClientId() != sealedClient || st.GetScopes()[0] != sealedScope || st.GetExtraClaims().GetFields()["department"].GetStringValue() != sealedClaim {
		t.Fatalf("opened state: %v", st)
	}
	checkNoClearText(t, env.Log.JetStream(), subjects...)

	kv, err := env.Log.JetStream().KeyValue(context.Background(), projections.FamilyBucket)
	if err != nil {
		t.Fatal(err)
	}
	status, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if status.Metadata()["tokenservice.families.format"] != "sealed-1" {
		t.Fatalf("bucket metadata %v", status.Metadata())
	}
	// Six events, each written once; the first of each family is created
	// without a read, the two rotations read their entry first.
	// ListFamilies read 2 values per subject (checkModel) and 2.
	if w, m, r := obs.get(projections.CacheWrite, projections.CacheOK), obs.get(projections.CacheRead, projections.CacheMiss), obs.get(projections.CacheRead, projections.CacheOK); w != 6 || m != 0 || r != 2+4+2 {
		t.Fatalf("counted %d writes, %d read misses, %d reads ok: %v", w, m, r, obs.n)
	}
	if _, err := store.ListFamilies(context.Background(), "nobody"); err != nil || obs.get(projections.CacheRead, projections.CacheMiss) != 1 {
		t.Fatalf("a subject without families: %v, %d misses", err, obs.get(projections.CacheRead, projections.CacheMiss))
	}
	if n := obs.get(projections.CacheRead, projections.CacheInvalid) + obs.get(projections.CacheRead, projections.CacheError) + obs.get(projections.CacheWrite, projections.CacheError); n != 0 {
		t.Fatalf("%d failures counted: %v", n, obs.n)
	}
}

// startProjectorWith runs a projector on a connection of its own until
// stop or the end of the test.
func startProjectorWith(t *testing.T, node *eventlogtest.Node, cfg projections.ProjectorConfig) (p *projections.FamilyProjector, stop func()) {
	t.Helper()
	return startProjectorOn(t, node, eventlog.Config{}, cfg)
}

// startProjectorOn is startProjectorWith on a log opened with logCfg.
func startProjectorOn(t *testing.T, node *eventlogtest.Node, logCfg eventlog.Config, cfg projections.ProjectorConfig) (p *projections.FamilyProjector, stop func()) {
	t.Helper()
	nc, err := node.Embedded.Connect()
	if err != nil {
		t.Fatal(err)
	}
	p, err = projections.NewFamilyProjector(eventlogtest.OpenLog(t, nc, logCfg), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; nc.Close() }) }
	t.Cleanup(stop)
	return p, stop
}

// TestFamilyModelTampered: a value with one bit changed, or moved to
// another family's key, is refused, counted and reported, never served;
// the projector replaces it with the family's last state in the log at
// the family's next event.
func TestFamilyModelTampered(t *testing.T) {
	t.Parallel()
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	var obs cacheCount
	var reported atomic.Int64
	store, err := projections.NewFamilyStore(env.Log.JetStream(), projections.StoreConfig{Sealer: env.Sealer, Observer: &obs,
		OnBadEntry: func(string, error) { reported.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	startProjectorWith(t, node, projections.ProjectorConfig{Sealer: env.Sealer, Observer: &obs, OnBadEntry: func(string, error) { reported.Add(1) }})
	a := generateSecret(t, env, "alice")
	b := generateSecret(t, env, "bob")
	env.CaughtUp(t)
	waitModel(t, env, store)

	ctx := context.Background()
	kv, err := env.Log.JetStream().KeyValue(ctx, projections.FamilyBucket)
	if err != nil {
		t.Fatal(err)
	}
	keyA, keyB := eventlog.SubjectID("alice")+"."+a.FamilyID, eventlog.SubjectID("bob")+"."+b.FamilyID
	ea, err := kv.Get(ctx, keyA)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := kv.Get(ctx, keyB)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(ea.Value())
	flipped[len(flipped)/2] ^= 0x10
	tests := []struct {
		name    string
		key     string
		value   []byte
		subject string
	}{
		{"one bit changed", keyA, flipped, "alice"},
		{"moved to another family", keyB, ea.Value(), "bob"},
		{"truncated", keyA, ea.Value()[:20], "alice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := kv.Put(ctx, tc.key, tc.value); err != nil {
				t.Fatal(err)
			}
			before, reportedBefore := obs.get(projections.CacheRead, projections.CacheInvalid), reported.Load()
			recs, err := store.ListFamilies(ctx, tc.subject)
			if !errors.Is(err, projections.ErrEntryUnreadable) || recs != nil {
				t.Fatalf("ListFamilies served %v, %v", recs, err)
			}
			if obs.get(projections.CacheRead, projections.CacheInvalid) != before+1 || reported.Load() != reportedBefore+1 {
				t.Fatal("the refused value was not counted and reported")
			}
		})
	}
	if _, err := kv.Put(ctx, keyB, eb.Value()); err != nil { // the genuine value, put back, opens
		t.Fatal(err)
	}
	if recs, err := store.ListFamilies(ctx, "bob"); err != nil || len(recs) != 1 {
		t.Fatalf("bob: %d, %v", len(recs), err)
	}

	// alice's entry does not open: her next event repairs it.
	before := obs.get(projections.CacheRead, projections.CacheInvalid)
	if _, err := env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: a.RefreshToken, ClientID: sealedClient}); err != nil {
		t.Fatal(err)
	}
	env.CaughtUp(t)
	waitModel(t, env, store)
	checkModel(t, env, store, []string{"alice", "bob"})
	if recs, err := store.ListFamilies(ctx, "alice"); err != nil || len(recs) != 1 || recs[0].GetState().GetGeneration() != 2 {
		t.Fatalf("repaired entry: %v, %v", recs, err)
	}
	if obs.get(projections.CacheRead, projections.CacheInvalid) != before+1 {
		t.Fatalf("the projector's read of the tampered entry was not counted: %v", obs.n)
	}
}

// TestFamilyModelKeyRotation: after ENCRYPTION_KEY is rotated (the old key
// kept as previous), the values sealed under the old key still open, and
// new writes seal under the new key; a sealer without the old key refuses
// the old values.
func TestFamilyModelKeyRotation(t *testing.T) {
	t.Parallel()
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	js := env.Log.JetStream()
	_, stopOld := startProjectorWith(t, node, projections.ProjectorConfig{Sealer: env.Sealer})
	tok := generateSecret(t, env, "carol")
	generateSecret(t, env, "dave")
	env.CaughtUp(t)
	waitModel(t, env, newStore(t, env, nil))

	newKey := make([]byte, seal.KeySize)
	if _, err := rand.Read(newKey); err != nil {
		t.Fatal(err)
	}
	rotated, err := seal.New(rand.Reader, newKey, issuertest.TestKey)
	if err != nil {
		t.Fatal(err)
	}
	onlyNew, err := seal.New(rand.Reader, newKey)
	if err != nil {
		t.Fatal(err)
	}
	storeOf := func(s *seal.Sealer) *projections.FamilyStore {
		st, err := projections.NewFamilyStore(js, projections.StoreConfig{Sealer: s})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	ctx := context.Background()
	if recs, err := storeOf(rotated).ListFamilies(ctx, "carol"); err != nil || len(recs) != 1 {
		t.Fatalf("after rotation: %d, %v", len(recs), err)
	}
	if _, err := storeOf(onlyNew).ListFamilies(ctx, "carol"); !errors.Is(err, projections.ErrEntryUnreadable) {
		t.Fatalf("without the old key: %v", err)
	}

	// A replica with the rotated sealer takes over and re-seals what it
	// writes: carol's entry then opens without the old key, dave's (not
	// written since) still needs it.
	stopOld()
	startProjectorWith(t, node, projections.ProjectorConfig{Sealer: rotated})
	if _, err := env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: sealedClient}); err != nil {
		t.Fatal(err)
	}
	env.CaughtUp(t)
	waitModel(t, env, storeOf(rotated))
	if recs, err := storeOf(rotated).ListFamilies(ctx, "carol"); err != nil || len(recs) != 1 || recs[0].GetState().GetGeneration() != 2 {
		t.Fatalf("carol after rotation: %v, %v", recs, err)
	}
	if recs, err := storeOf(onlyNew).ListFamilies(ctx, "carol"); err != nil || len(recs) != 1 {
		t.Fatalf("carol re-sealed under the new key: %d, %v", len(recs), err)
	}
	if _, err := storeOf(onlyNew).ListFamilies(ctx, "dave"); !errors.Is(err, projections.ErrEntryUnreadable) {
		t.Fatalf("dave, sealed under the old key, without it: %v", err)
	}

	// The re-seal pass (ENCRYPTION_KEY_PREVIOUS set) rewrites dave's entry
	// without an event of his: the old key can then be dropped.
	resealed := make(chan int, 1)
	startProjectorWith(t, node, projections.ProjectorConfig{Sealer: rotated, Reseal: true, OnResealed: func(n int) { resealed <- n }})
	select {
	case n := <-resealed:
		if n != 1 {
			t.Fatalf("re-sealed %d entries, want dave's", n)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no re-seal pass")
	}
	for _, sub := range []string{"carol", "dave"} {
		if recs, err := storeOf(onlyNew).ListFamilies(ctx, sub); err != nil || len(recs) != 1 {
			t.Fatalf("%s with the new key alone after the re-seal pass: %d, %v", sub, len(recs), err)
		}
	}
	checkModel(t, env, storeOf(onlyNew), []string{"carol", "dave"})
}

// TestFamilyModelUpgrade: a bucket written by a release that did not seal
// (plain FamilyRecord values, no format marker) is refused by the store
// value by value, then deleted and rebuilt sealed by the projector, once;
// a rebuilt bucket is left alone by the next projector.
func TestFamilyModelUpgrade(t *testing.T) {
	t.Parallel()
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	js := env.Log.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	subjects := []string{sealedSubject, "erin"}
	var fams []issuer.Tokens
	for _, s := range subjects {
		fams = append(fams, generateSecret(t, env, s))
	}
	env.CaughtUp(t)

	// What the earlier release wrote: its bucket configuration, one plain
	// record per family.
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: projections.FamilyBucket, History: 1, Storage: jetstream.FileStorage,
		Description: "token families read model (one projector writes it)", LimitMarkerTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range subjects {
		data, err := proto.Marshal(&eventsv1.FamilyRecord{SourceSeq: 1, State: &eventsv1.FamilyState{
			FamilyId: fams[i].FamilyID, Subject: s, ClientId: sealedClient, Scopes: []string{sealedScope}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, eventlog.SubjectID(s)+"."+fams[i].FamilyID, data); err != nil {
			t.Fatal(err)
		}
	}
	var obs cacheCount
	store := newStore(t, env, &obs)
	if _, err := store.ListFamilies(ctx, "erin"); !errors.Is(err, projections.ErrEntryUnreadable) {
		t.Fatalf("a plain value: %v", err)
	}

	var rebuilds atomic.Int64
	cfg := projections.ProjectorConfig{Sealer: env.Sealer, Observer: &obs, OnRebuild: func() { rebuilds.Add(1) }}
	p, _ := startProjectorWith(t, node, cfg)
	waitModel(t, env, store)
	checkModel(t, env, store, subjects)
	checkNoClearText(t, js, subjects...)
	if rebuilds.Load() != 1 || obs.get(projections.CacheDelete, projections.CacheOK) != 1 || p.Applied() != 2 {
		t.Fatalf("%d rebuilds, %d deletes counted, %d events applied", rebuilds.Load(), obs.get(projections.CacheDelete, projections.CacheOK), p.Applied())
	}

	// A second projector (a replica restarting) finds the marker.
	startProjectorWith(t, node, cfg)
	generateSecret(t, env, "erin")
	env.CaughtUp(t)
	waitModel(t, env, store)
	checkModel(t, env, store, subjects)
	if rebuilds.Load() != 1 {
		t.Fatalf("the sealed bucket was rebuilt again: %d", rebuilds.Load())
	}
}

// TestFamilyProjectorNeedsSealer: neither the projector nor the store
// works without a sealer.
func TestFamilyProjectorNeedsSealer(t *testing.T) {
	t.Parallel()
	node := eventlogtest.SingleNode(t)
	log := eventlogtest.OpenLog(t, node.Conn, eventlog.Config{})
	if _, err := projections.NewFamilyProjector(log, projections.ProjectorConfig{}); err == nil {
		t.Fatal("a projector without a sealer")
	}
	if _, err := projections.NewFamilyStore(log.JetStream(), projections.StoreConfig{}); err == nil {
		t.Fatal("a store without a sealer")
	}
}
