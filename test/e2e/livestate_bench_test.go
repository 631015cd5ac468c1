package e2e

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

var expiredFamilies = flag.Int("expired-families", 200_000, "families BenchmarkRestartRSS and BenchmarkJoinRSS issue and let expire")

// BenchmarkRestartRSS is issue 13's measurement as a user makes it, on
// tokend processes: a tokend child on its embedded NATS server
// (ACCESS_TOKEN_TTL=1, REFRESH_TOKEN_TTL=2, PROJECTION_CHECKPOINT_INTERVAL=1,
// AUTH_MODE none on loopback) issues -expired-families families through
// GenerateTokens (8 callers), waits until it holds nothing and the stream's
// 2-minute duplicate window has passed, stops (SIGTERM) and starts again on
// the same data folder; side by side with a start on an empty data folder
// (after a warm-up start) and a restart that replays the whole log
// (PROJECTION_CHECKPOINT_INTERVAL=0). Each start is timed from the exec to
// the first 200 of /readyz (polled every 25 ms), and its VmRSS read from
// /proc 2 s after ready; the embedded NATS server is part of the process,
// so its memory counts, as it does for a user.
//
//	ready_ms_empty, ready_ms, ready_ms_replay   exec to ready
//	rss_MB_empty, rss_MB, rss_MB_replay         VmRSS 2 s after ready (MiB)
//	us/expired_family   (ready_ms - ready_ms_empty) per family (target <= 1)
//	B/expired_family    (rss - rss_empty) per family (target <= 50)
//	us/expired_family_replay, B/expired_family_replay   the same, full replay
func BenchmarkRestartRSS(b *testing.B) {
	var r rssRuns
	for range b.N {
		c, _ := startMeasured(b, newChildEnv(b, expiryVars())) // the first start pays for cold caches
		stopChild(b, c)
		c, s := startMeasured(b, newChildEnv(b, expiryVars()))
		add(b, &r.empty, s, "empty data folder")
		stopChild(b, c)

		env := newChildEnv(b, expiryVars())
		c = startChild(b, env)
		c.waitReady(env.baseURL(), time.Minute)
		waitEnded(b, c, env.baseURL(), issueFamilies(b, env.baseURL(), *expiredFamilies))
		stopChild(b, c)
		b.Logf("data folder after %d expired families: %.1f MiB", *expiredFamilies, float64(dirSize(b, env.DataDir))/(1<<20))

		c, s = startMeasured(b, env)
		add(b, &r.restart, s, "restart from a checkpoint")
		stopChild(b, c)
		env.Extra = expiryVars("PROJECTION_CHECKPOINT_INTERVAL", "0")
		c, s = startMeasured(b, env)
		add(b, &r.replay, s, "restart replaying the log")
		stopChild(b, c)
	}
	r.report(b, *expiredFamilies)
}

// BenchmarkJoinRSS is BenchmarkRestartRSS for a replica that joins a
// 3-node JetStream cluster of nats-server processes on loopback (no
// users, so NATS_INSECURE_ALLOW_ANONYMOUS_APPEND; NATS_REPLICAS=3):
// replica A, on the first node, issues the families and waits as above;
// replica B then starts on the second node with a fresh data folder, and
// C, replaying the whole log (PROJECTION_CHECKPOINT_INTERVAL=0), on the
// third. Side by side, on a separate empty cluster where a replica created
// the log and still runs, a replica joins on the second node. Only the
// joining replica's process is measured: the NATS nodes are processes of
// their own.
func BenchmarkJoinRSS(b *testing.B) {
	var r rssRuns
	vars := func(n *natsNode, extra ...string) map[string]string {
		return expiryVars(append([]string{"NATS_URL", n.url(), "NATS_REPLICAS", "3", "NATS_INSECURE_ALLOW_ANONYMOUS_APPEND", "true"}, extra...)...)
	}
	for range b.N {
		nodes := startNATS(b, 3, false)
		aEnv := newChildEnv(b, vars(nodes[0]))
		a := startChild(b, aEnv) // creates the log, its key and buckets
		a.waitReady(aEnv.baseURL(), time.Minute)
		c, s := startMeasured(b, newChildEnv(b, vars(nodes[1])))
		add(b, &r.empty, s, "join an empty cluster")
		stopChild(b, c)
		stopChild(b, a)
		stopNodes(nodes)

		nodes = startNATS(b, 3, false)
		aEnv = newChildEnv(b, vars(nodes[0]))
		a = startChild(b, aEnv)
		a.waitReady(aEnv.baseURL(), time.Minute)
		waitEnded(b, a, aEnv.baseURL(), issueFamilies(b, aEnv.baseURL(), *expiredFamilies))
		c, s = startMeasured(b, newChildEnv(b, vars(nodes[1])))
		add(b, &r.restart, s, "join from a checkpoint")
		stopChild(b, c)
		c, s = startMeasured(b, newChildEnv(b, vars(nodes[2], "PROJECTION_CHECKPOINT_INTERVAL", "0")))
		add(b, &r.replay, s, "join replaying the log")
		stopChild(b, c)
		stopChild(b, a)
		stopNodes(nodes)
	}
	r.report(b, *expiredFamilies)
}

// expiryVars are the variables of the benchmarks' tokend children beyond
// childEnv's, and extra (name, value pairs).
func expiryVars(extra ...string) map[string]string {
	v := map[string]string{
		"ACCESS_TOKEN_TTL": "1", "REFRESH_TOKEN_TTL": "2", "REFRESH_REUSE_GRACE": "0",
		"KEY_ROTATION_PERIOD": "0", "PROJECTION_CHECKPOINT_INTERVAL": "1",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v[extra[i]] = extra[i+1]
	}
	return v
}

// startFigures are one start's measurements.
type startFigures struct {
	ready    time.Duration // exec to the first 200 of /readyz
	rss, hwm uint64        // VmRSS 2 s after ready, and VmHWM (peak) then
	// heap is the Go heap in use and idle is its part not yet returned to
	// the system (go_memstats_heap_inuse_bytes and heap_idle - heap_released
	// of /metrics), read with rss: what of rss is the Go heap.
	heap, idle float64
}

// startMeasured starts tokend with env, waits until it is ready and 2 s
// more, and returns it with its figures.
func startMeasured(b *testing.B, env childEnv) (*child, startFigures) {
	b.Helper()
	c := startChild(b, env)
	c.waitReady(env.baseURL(), 3*time.Minute)
	ready := time.Since(c.started)
	time.Sleep(2 * time.Second)
	rss, hwm := procMemory(b, c.pid)
	f := startFigures{ready: ready, rss: rss, hwm: hwm}
	hc := &http.Client{Timeout: 5 * time.Second}
	var err error
	if f.heap, err = metricValue(hc, env.baseURL(), "go_memstats_heap_inuse_bytes"); err != nil {
		b.Fatal(err)
	}
	idle, err := metricValue(hc, env.baseURL(), "go_memstats_heap_idle_bytes")
	if err != nil {
		b.Fatal(err)
	}
	released, err := metricValue(hc, env.baseURL(), "go_memstats_heap_released_bytes")
	if err != nil {
		b.Fatal(err)
	}
	f.idle = idle - released
	return c, f
}

// procMemory returns VmRSS and VmHWM of pid in bytes, from /proc.
func procMemory(b *testing.B, pid int) (rss, hwm uint64) {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if errors.Is(err, fs.ErrNotExist) {
		b.Skip("no /proc to read a process's memory from")
	}
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			b.Fatalf("/proc/%d/status %s: %v", pid, name, err)
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	if rss == 0 {
		b.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	return rss, hwm
}

// stopChild stops c with SIGTERM and requires a clean exit: a crash would
// leave the next start something else to measure.
func stopChild(b *testing.B, c *child) {
	b.Helper()
	if code, _ := c.stop(30 * time.Second); code != 0 {
		b.Fatalf("pid %d exited with %d after SIGTERM:\n%s", c.pid, code, c.logTail(4<<10))
	}
}

// stopNodes stops the nodes' processes (SIGTERM, then SIGKILL), so that a
// cluster no longer needed takes no CPU from the next measurement.
func stopNodes(nodes []*natsNode) {
	for _, n := range nodes {
		n.proc.stop(30 * time.Second)
	}
}

// issueFamilies starts n families through GenerateTokens at base with 8
// callers, and returns when the last call returned.
func issueFamilies(b *testing.B, base string, n int) time.Time {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	client := tokenClient(http1Client(), base)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n) && failed.Load() == nil; i = next.Add(1) {
				_, err := generate(ctx, client, &tokenv1.GenerateTokensRequest{
					Subject: fmt.Sprintf("user-%d@example.com", i%50_000), ClientId: "bench-client",
					Audience: []string{"https://api.example.com"}, Scopes: []string{"openid", "profile"}})
				if err != nil {
					failed.Store(fmt.Errorf("family %d: %w", i, err))
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.Logf("issued %d families in %s", n, time.Since(t0).Round(time.Millisecond))
	return time.Now()
}

// waitEnded waits until c's /metrics shows token_service_projection_entries
// 0 (every family ended and a tick let it forget them), then until the
// stream's duplicate window (2 minutes, whose message IDs a NATS server
// indexes in memory when it starts) has passed since issued, the return of
// the last GenerateTokens call.
func waitEnded(b *testing.B, c *child, base string, issued time.Time) {
	b.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	deadline := issued.Add(2 * time.Minute)
	for {
		n, err := metricValue(hc, base, "token_service_projection_entries")
		if err == nil && n == 0 {
			break
		}
		if !c.running() {
			b.Fatalf("tokend pid %d exited while its families expired:\n%s", c.pid, c.logTail(4<<10))
		}
		if time.Now().After(deadline) {
			b.Fatalf("token_service_projection_entries %v (%v) 2 minutes after the last family was issued", n, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	b.Logf("nothing held %s after the last family was issued", time.Since(issued).Round(time.Millisecond))
	time.Sleep(time.Until(issued.Add(2*time.Minute + 5*time.Second)))
}

// metricValue reads the sample of metric name (without labels) from
// base's /metrics.
func metricValue(hc *http.Client, base, name string) (float64, error) {
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

// dirSize returns the bytes of the regular files under dir.
func dirSize(b *testing.B, dir string) int64 {
	b.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n += info.Size()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// rssRuns sums the measured starts: with nothing in the log, after the
// expired families from a checkpoint, and replaying the whole log.
type rssRuns struct {
	empty, restart, replay startFigures
}

// add adds s to sum and logs it with its peak RSS (VmHWM) and Go heap,
// which the metrics leave out.
func add(b *testing.B, sum *startFigures, s startFigures, what string) {
	b.Helper()
	sum.ready += s.ready
	sum.rss += s.rss
	b.Logf("%s: ready after %s, VmRSS %.1f MiB, VmHWM %.1f MiB, Go heap in use %.1f MiB, idle not returned %.1f MiB",
		what, s.ready.Round(time.Millisecond), float64(s.rss)/(1<<20), float64(s.hwm)/(1<<20), s.heap/(1<<20), s.idle/(1<<20))
}

func (r rssRuns) report(b *testing.B, n int) {
	runs := float64(b.N)
	ms := func(s startFigures) float64 { return float64(s.ready) / float64(time.Millisecond) / runs }
	mb := func(s startFigures) float64 { return float64(s.rss) / (1 << 20) / runs }
	us := func(s startFigures) float64 {
		return float64(s.ready-r.empty.ready) / float64(time.Microsecond) / runs / float64(n)
	}
	per := func(s startFigures) float64 { return (float64(s.rss) - float64(r.empty.rss)) / runs / float64(n) }
	b.ReportMetric(ms(r.empty), "ready_ms_empty")
	b.ReportMetric(ms(r.restart), "ready_ms")
	b.ReportMetric(ms(r.replay), "ready_ms_replay")
	b.ReportMetric(mb(r.empty), "rss_MB_empty")
	b.ReportMetric(mb(r.restart), "rss_MB")
	b.ReportMetric(mb(r.replay), "rss_MB_replay")
	b.ReportMetric(us(r.restart), "us/expired_family")
	b.ReportMetric(per(r.restart), "B/expired_family")
	b.ReportMetric(us(r.replay), "us/expired_family_replay")
	b.ReportMetric(per(r.replay), "B/expired_family_replay")
}
