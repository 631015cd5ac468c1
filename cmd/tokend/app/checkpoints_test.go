package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/projections"
)

// TestRestartFromCheckpoint: tokend forgets the families that ended, even
// on a quiet log (a tick moves event time on), writes a checkpoint when
// it stops, and the next start restores it and replays only the tail,
// into exactly the state a full replay gives. A checkpoint that does not
// open is counted and replaced by a full replay, with the same state.
func TestRestartFromCheckpoint(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	start := func(extra ...string) (*app.Main, *logBuffer) {
		t.Helper()
		vars := map[string]string{"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": dir, "NATS_LISTEN": "127.0.0.1:0",
			"LOG_LEVEL": "info", "JWT_ALGORITHM": "ES256", "KEY_ROTATION_PERIOD": "0",
			"ENCRYPTION_KEY":   base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 32)),
			"ACCESS_TOKEN_TTL": "1", "REFRESH_TOKEN_TTL": "3", "PROJECTION_CHECKPOINT_INTERVAL": "200ms", "REFRESH_REUSE_GRACE": "0"}
		for i := 0; i+1 < len(extra); i += 2 {
			vars[extra[i]] = extra[i+1]
		}
		cfg, err := app.ConfigFromEnv(func(k string) string { return vars[k] })
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		logs := &logBuffer{}
		m, err := app.Start(sctx, cfg, slog.New(slog.NewTextHandler(logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		return m, logs
	}
	stop := func(m *app.Main) {
		t.Helper()
		if err := m.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// fullReplay is the state a replica that replays the whole log
	// reaches, at the position m's set is at once quiet.
	checkAgainstReplay := func(m *app.Main) {
		t.Helper()
		var last uint64
		deadline := time.Now().Add(10 * time.Second)
		for {
			l, err := m.Log.LastSeq(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if l == last && m.Set.Seq() == l {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the set at %d did not reach the log's %d", m.Set.Seq(), l)
			}
			last = l
			time.Sleep(300 * time.Millisecond)
		}
		full := projections.NewSet(m.Config.AccessTTL)
		if err := m.Log.Replay(ctx, 1, nil, func(rec eventlog.Record) { _ = full.Apply(rec) }); err != nil {
			t.Fatal(err)
		}
		if full.Seq() != m.Set.Seq() || full.Digest() != m.Set.Digest() {
			t.Fatalf("the replica at %d differs from a full replay at %d", m.Set.Seq(), full.Seq())
		}
	}

	m, _ := start()
	if got := checkpointLoads(t, m, projections.LoadMissing); got != 1 {
		t.Fatalf("first start: %v missing checkpoints counted, want 1", got)
	}
	var toks []issuer.Tokens
	for range 20 {
		tok, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "alice", ClientID: "web", Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	if _, err := m.Issuer.Revoke(ctx, issuer.RevokeRequest{Target: issuer.TargetFamily, Value: toks[0].FamilyID, Reason: "admin"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the families to be held", func() bool { return m.Set.Len() >= 20 })
	// Every family ends within 3 s and the log is quiet: a tick lets the
	// replica forget them.
	waitFor(t, "the families that ended to be forgotten", func() bool { return m.Set.Len() == 0 })
	checkAgainstReplay(m)
	stop(m)

	m, logs := start()
	if got := checkpointLoads(t, m, projections.LoadRestored); got != 1 {
		t.Fatalf("restart: %v restored checkpoints counted, want 1; logs:\n%s", got, logs)
	}
	if m.Set.Len() != 0 {
		t.Fatalf("restart after every family ended: %d entries held", m.Set.Len())
	}
	if _, ok := m.Set.ActiveKey(); !ok {
		t.Fatal("no active key after restoring the checkpoint: the key aggregate was not replayed")
	}
	tok, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "bob", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	checkAgainstReplay(m)

	stop(m)

	// A checkpoint that does not open (written by a tokend with
	// checkpoints off, which neither ticks nor writes one when it stops):
	// replaced by a full replay.
	m, _ = start("PROJECTION_CHECKPOINT_INTERVAL", "0")
	obs, err := m.Log.JetStream().ObjectStore(ctx, projections.CheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(ctx, "projections")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: "projections", Metadata: info.Metadata}, strings.NewReader("not a checkpoint")); err != nil {
		t.Fatal(err)
	}
	stop(m)
	m, logs = start()
	defer stop(m)
	if got := checkpointLoads(t, m, projections.LoadCorrupt); got != 1 {
		t.Fatalf("corrupt checkpoint: %v counted, want 1; logs:\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), "projections checkpoint not used") {
		t.Fatalf("no log line says the checkpoint was not used:\n%s", logs)
	}
	if _, err := m.Issuer.VerifyAccessToken(tok.AccessToken, false); err != nil && !strings.Contains(err.Error(), "expired") {
		t.Fatalf("a token issued before the restart: %v", err)
	}
	checkAgainstReplay(m)
}

// checkpointLoads returns token_service_projection_checkpoint_loads_total
// for outcome.
func checkpointLoads(t *testing.T, m *app.Main, outcome string) float64 {
	t.Helper()
	mfs, err := m.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "token_service_projection_checkpoint_loads_total" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			if mm.GetLabel()[0].GetValue() == outcome {
				return mm.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no checkpoint loads series for %s", outcome)
	return 0
}
