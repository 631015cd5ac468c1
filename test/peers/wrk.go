package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// run is one wrk run against one target, with the CPU time the target's
// process used meanwhile.
type run struct {
	target   string
	requests int
	rate     float64 // completed requests per second
	failed   int     // non-2xx answers and socket errors
	p50, p99 time.Duration
	cpu      time.Duration // the server process's CPU time during the run
}

// cpuPerCall is the server's CPU time per completed request.
func (r run) cpuPerCall() time.Duration {
	if r.requests == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.requests)
}

// wrkRun runs wrk (one thread, conns connections, for d) with w against t
// and reads t's CPU time before and after. tokens, when set, is the pool of
// refresh tokens of a refresh run (one per connection).
func (h *harness) wrkRun(ctx context.Context, t *target, w workload, conns int, d time.Duration, tokens []string) (run, error) {
	script := filepath.Join(h.dir, "wrk", "post.lua")
	env := append(os.Environ(), "BODY="+w.body, "CONTENT_TYPE="+w.contentType, "AUTH="+w.auth)
	if tokens != nil {
		f, err := os.CreateTemp(h.work, "tokens-")
		if err != nil {
			return run{}, err
		}
		_, err = f.WriteString(strings.Join(tokens, "\n") + "\n")
		if err := errors.Join(err, f.Close()); err != nil {
			return run{}, err
		}
		defer os.Remove(f.Name())
		script = filepath.Join(h.dir, "wrk", "refresh.lua")
		env = append(env, "TOKENS_FILE="+f.Name(), "FIELD="+w.field)
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.wrk, "-t1", "-c"+strconv.Itoa(conns), "-d"+durationArg(d),
		"--timeout", "10s", "--latency", "-s", script, w.url)
	cmd.Env = env
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	before, err := cpuTime(t.p.pid(), h.ticks)
	if err != nil {
		return run{}, err
	}
	if err := cmd.Run(); err != nil {
		return run{}, fmt.Errorf("wrk %s: %w: %s", w.url, err, stderr.String())
	}
	after, err := cpuTime(t.p.pid(), h.ticks)
	if err != nil {
		return run{}, err
	}
	r, err := parseWrk(out.String())
	if err != nil {
		return run{}, fmt.Errorf("wrk %s: %w\n%s", w.url, err, out.String())
	}
	r.target, r.cpu = t.name, after-before
	return r, nil
}

// durationArg formats d for wrk (whole seconds, at least 1).
func durationArg(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	return strconv.Itoa(max(s, 1)) + "s"
}

// parseWrk reads wrk 4's report: the request count, Requests/sec, the
// non-2xx and socket-error counts and the 50% and 99% latency lines.
func parseWrk(out string) (run, error) {
	var r run
	var haveCount, haveRate bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.Atoi(f[0])
			if err != nil {
				return r, err
			}
			r.requests, haveCount = n, true
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, err
			}
			r.rate, haveRate = v, true
		case len(f) == 5 && f[0] == "Non-2xx":
			n, err := strconv.Atoi(f[4])
			if err != nil {
				return r, err
			}
			r.failed += n
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 3; i < len(f); i += 2 {
				n, _ := strconv.Atoi(strings.TrimSuffix(f[i], ","))
				r.failed += n
			}
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := wrkDuration(f[1])
			if err != nil {
				return r, err
			}
			if f[0] == "50%" {
				r.p50 = d
			} else {
				r.p99 = d
			}
		}
	}
	if !haveCount || !haveRate {
		return r, fmt.Errorf("no request count or rate in wrk's output")
	}
	return r, nil
}

// wrkDuration parses wrk's latency figures: 1.23ms, 456.00us, 1.02s, 2.00m.
func wrkDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(f * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("latency %q: unknown unit", s)
}
