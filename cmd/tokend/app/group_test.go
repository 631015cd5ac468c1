package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var errBroken = errors.New("broken")

// waitGoroutines waits, for at most 10 s, until no more goroutines run
// than before, and fails the test otherwise.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGroupStopsInReverseOrder(t *testing.T) {
	before := runtime.NumGoroutine()
	g := newGroup(context.Background(), slog.New(slog.DiscardHandler))
	var mu sync.Mutex
	var events []string
	record := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, s)
	}
	for _, name := range []string{"a", "b", "c"} {
		g.Go(name, func(ctx context.Context) error {
			<-ctx.Done()
			record("exit " + name)
			return ctx.Err()
		}, func(context.Context) error {
			record("stop " + name)
			return nil
		})
	}
	if err := g.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	want := []string{"stop c", "exit c", "stop b", "exit b", "stop a", "exit a"}
	if !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}
	waitGoroutines(t, before)
}

func TestGroupReportsExitErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		run      func(ctx context.Context) error
		stop     func(ctx context.Context) error
		wantFail error // delivered by Failed and logged, while running
		wantStop error // returned by Stop
	}{
		{name: "ends when stopped", run: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		{name: "ends with nil when stopped", run: func(ctx context.Context) error { <-ctx.Done(); return nil }},
		{name: "fails while running", run: func(context.Context) error { return errBroken }, wantFail: errBroken},
		{name: "returns while running", run: func(context.Context) error { return nil }, wantFail: errStoppedEarly},
		{name: "fails while stopping", run: func(ctx context.Context) error { <-ctx.Done(); return errBroken }, wantStop: errBroken},
		{name: "stop fails", run: func(ctx context.Context) error { <-ctx.Done(); return nil },
			stop: func(context.Context) error { return errBroken }, wantStop: errBroken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			g := newGroup(context.Background(), slog.New(slog.NewJSONHandler(&logs, nil)))
			g.Go("part", tt.run, tt.stop)
			if tt.wantFail != nil {
				select {
				case err := <-g.Failed():
					if !errors.Is(err, tt.wantFail) || !strings.Contains(err.Error(), "part") {
						t.Errorf("Failed delivered %v, want %v naming the component", err, tt.wantFail)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Failed delivered nothing")
				}
				if n := strings.Count(logs.String(), `"component":"part"`); n != 1 {
					t.Errorf("logged %d times, want once:\n%s", n, logs.String())
				}
			}
			err := g.Stop(context.Background())
			if tt.wantStop == nil && err != nil || tt.wantStop != nil && !errors.Is(err, tt.wantStop) {
				t.Errorf("Stop: %v, want %v", err, tt.wantStop)
			}
			if tt.wantFail == nil && logs.String() != "" {
				t.Errorf("logged %s", logs.String())
			}
			select {
			case err := <-g.Failed():
				t.Errorf("Failed delivered %v after Stop", err)
			default:
			}
		})
	}
}

// TestServiceReportsAFailedComponent starts tokend, makes one more
// component fail while it serves, and checks that the failure is logged
// with the component's name and delivered by Err; then that Close stops
// every goroutine tokend started.
func TestServiceReportsAFailedComponent(t *testing.T) {
	before := runtime.NumGoroutine()
	vars := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0", "LOG_LEVEL": "info",
		"JWT_ALGORITHM": "ES256", "ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)),
		"METRICS_ADDR": "127.0.0.1:0",
	}
	cfg, err := ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var logs syncBuffer
	m, err := Start(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	m.group.Go("doomed", func(context.Context) error { return errBroken }, nil)
	select {
	case err := <-m.Err():
		if !errors.Is(err, errBroken) {
			t.Errorf("Err delivered %v, want %v", err, errBroken)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Err delivered nothing")
	}
	if !strings.Contains(logs.String(), `"component":"doomed"`) {
		t.Errorf("the failure is not logged with its component:\n%s", logs.String())
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitGoroutines(t, before)
}
