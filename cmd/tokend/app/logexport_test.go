package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/grpc"

	"github.com/auth-platform/tokenservice/eventlog"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

// otlpReceiver is an OTLP/gRPC logs receiver that records what it is
// sent, or, with stall, holds every export until the test ends.
type otlpReceiver struct {
	collogspb.UnimplementedLogsServiceServer
	stall chan struct{} // nil: answer at once

	mu      sync.Mutex
	records []receivedLog
	exports int
}

type receivedLog struct {
	service string
	rec     *logspb.LogRecord
}

func (r *otlpReceiver) Export(ctx context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	r.mu.Lock()
	r.exports++
	r.mu.Unlock()
	if r.stall != nil {
		select {
		case <-r.stall:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rl := range req.GetResourceLogs() {
		service := attrString(rl.GetResource().GetAttributes(), "service.name")
		for _, sl := range rl.GetScopeLogs() {
			for _, lr := range sl.GetLogRecords() {
				r.records = append(r.records, receivedLog{service: service, rec: lr})
			}
		}
	}
	return &collogspb.ExportLogsServiceResponse{}, nil
}

func (r *otlpReceiver) received() ([]receivedLog, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.records), r.exports
}

// startReceiver serves r on a loopback port and returns its
// LOGGING_SERVICE_ADDRESS.
func startReceiver(t *testing.T, r *otlpReceiver) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(srv, r)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns when Stop closes the listener
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	if r.stall != nil {
		t.Cleanup(func() { close(r.stall) }) // runs before Stop
	}
	return "http://" + ln.Addr().String()
}

func attrString(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// TestLogsReachOTLPReceiver: with LOGGING_SERVICE_ADDRESS, the record a
// failed request logs reaches a real OTLP/gRPC receiver with its
// correlation ID and every attribute that stdout shows, under the
// service's name.
func TestLogsReachOTLPReceiver(t *testing.T) {
	recv := &otlpReceiver{}
	addr := startReceiver(t, recv)
	m, stdout := startForLogs(t, map[string]string{"LOGGING_SERVICE_ADDRESS": addr}, nil)
	client := tokenv1connect.NewTokenServiceClient(&http.Client{Timeout: 30 * time.Second}, "http://"+m.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	m.nc.Close() // the event log is gone: GenerateTokens fails and logs why
	const id = "otlp-logs-test-1"
	_, err := client.GenerateTokens(ctx, withCorrelation(&tokenv1.GenerateTokensRequest{Subject: "alice", ClientId: "web", Audience: []string{"api"}}, id))
	if connect.CodeOf(err) != connect.CodeInternal && connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("GenerateTokens without NATS: %v, want a server error", err)
	}
	if err := m.Close(ctx); err != nil {
		t.Logf("close: %v", err)
	}

	// What stdout shows for the request.
	var want map[string]any
	sc := bufio.NewScanner(strings.NewReader(stdout.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["correlation_id"] == id {
			want = rec
		}
	}
	if want == nil {
		t.Fatalf("no stdout record with correlation_id %s:\n%s", id, stdout.String())
	}

	got, _ := recv.received()
	var found *receivedLog
	for i := range got {
		if attrString(got[i].rec.GetAttributes(), logKeyCorrelationID) == id {
			if found != nil {
				t.Errorf("the record with correlation_id %s arrived twice", id)
			}
			found = &got[i]
		}
	}
	if found == nil {
		t.Fatalf("no record with correlation_id %s among the %d received", id, len(got))
	}
	if found.service != "tokend" {
		t.Errorf("service.name %q, want tokend", found.service)
	}
	if body := found.rec.GetBody().GetStringValue(); body != want["msg"] {
		t.Errorf("body %q, want the message %q", body, want["msg"])
	}
	if sev := found.rec.GetSeverityText(); sev != want["level"] {
		t.Errorf("severity %q, want %q", sev, want["level"])
	}
	for k, v := range want {
		if k == "time" || k == "level" || k == "msg" {
			continue
		}
		if got := attrString(found.rec.GetAttributes(), k); got != fmt.Sprint(v) {
			t.Errorf("attribute %s = %q, want %q as on stdout", k, got, v)
		}
	}
	if len(found.rec.GetAttributes()) != len(want)-3 {
		t.Errorf("%d attributes, stdout shows %d: %v", len(found.rec.GetAttributes()), len(want)-3, found.rec.GetAttributes())
	}
}

// TestLogOutageDoesNotHoldRequests runs requests and a flood of records
// (several times what the queue holds) against a receiver that stalls
// every export, a listener that accepts connections and never answers,
// and an address where nothing listens. Every record and every request
// returns (a watchdog fails the test if one blocks), and Close returns
// once its flush gives up. The request latencies are measured against a
// tokend without LOGGING_SERVICE_ADDRESS and logged (measurements, not
// assertions: the machine is shared).
func TestLogOutageDoesNotHoldRequests(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // accepted, never read nor written
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nothing := "http://" + closed.Addr().String()
	closed.Close()

	stalled := &otlpReceiver{stall: make(chan struct{})}
	cases := []struct {
		name, addr string
	}{
		{"no export (baseline)", ""},
		{"receiver stalls every export", startReceiver(t, stalled)},
		{"listener never answers", "http://" + silent.Addr().String()},
		{"nothing listens", nothing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			extra := map[string]string{}
			if tc.addr != "" {
				extra["LOGGING_SERVICE_ADDRESS"] = tc.addr
			}
			m, _ := startForLogs(t, extra, nil)
			client := tokenv1connect.NewTokenServiceClient(&http.Client{Timeout: 30 * time.Second}, "http://"+m.Addr())
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			rctx := eventlog.WithCorrelationID(ctx, "flood")

			flooded := make(chan struct{})
			go func() {
				defer close(flooded)
				for i := range 4 * logQueueSize {
					m.Logger.InfoContext(rctx, "flood", "i", i, "padding", strings.Repeat("x", 256))
				}
			}()
			const n = 40
			lat := make([]time.Duration, 0, n)
			for range n {
				start := time.Now()
				if _, err := client.GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "alice", ClientId: "web", Audience: []string{"api"}})); err != nil {
					t.Fatalf("GenerateTokens: %v", err)
				}
				lat = append(lat, time.Since(start))
			}
			watchdog(t, flooded, "a log record blocked while the receiver is out")

			// Requests that log (a server error each) while it is out;
			// a few, since a request that finds NATS gone is slow by
			// itself (the issuer's retries), export or not.
			m.nc.Close()
			failed := make([]time.Duration, 0, 3)
			for i := range cap(failed) {
				start := time.Now()
				_, err := client.GenerateTokens(ctx, withCorrelation(&tokenv1.GenerateTokensRequest{Subject: "alice", ClientId: "web", Audience: []string{"api"}}, fmt.Sprintf("outage-%d", i)))
				if err == nil || connect.CodeOf(err) == connect.CodeDeadlineExceeded {
					t.Fatalf("GenerateTokens without NATS: %v, want a prompt server error", err)
				}
				failed = append(failed, time.Since(start))
			}
			t.Logf("GenerateTokens: median %v, p90 %v; failing and logging: median %v, p90 %v",
				quantile(lat, .5), quantile(lat, .9), quantile(failed, .5), quantile(failed, .9))

			closed := make(chan struct{})
			go func() {
				defer close(closed)
				_ = m.Close(context.Background())
			}()
			watchdog(t, closed, "Close waited for the log receiver")
		})
	}
	if _, exports := stalled.received(); exports == 0 {
		t.Error("the stalled receiver was never called: the test did not exercise an outage")
	}
}

// watchdog fails t if done is not closed within 30 s: far more than any
// step takes unless it waits for the log receiver (an export waits up to
// logExportTimeout, and a flush up to logFlushTimeout).
func watchdog(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal(what)
	}
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}
