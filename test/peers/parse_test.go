package main

import (
	"os"
	"testing"
	"time"
)

// A report of wrk 4.1.0 with --latency, as the harness reads it.
const wrkReport = `Running 3s test @ http://127.0.0.1:4444/oauth2/token
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    40.11ms   29.55ms 208.66ms   72.21%
    Req/Sec   215.37     52.47   340.00     60.00%
  Latency Distribution
     50%   31.57ms
     75%   52.10ms
     90%   80.31ms
     99%    1.02s
  648 requests in 3.02s, 402.47KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:    214.34
Transfer/sec:    133.13KB
`

func TestParseWrk(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    run
		wantErr bool
	}{
		{name: "full report", in: wrkReport, want: run{requests: 648, rate: 214.34, failed: 7,
			p50: 31570 * time.Microsecond, p99: 1020 * time.Millisecond}},
		{name: "no failures, microseconds", in: "     50%  812.00us\n     99%    2.50ms\n  10 requests in 1.00s, 1KB read\nRequests/sec:     10.00\n",
			want: run{requests: 10, rate: 10, p50: 812 * time.Microsecond, p99: 2500 * time.Microsecond}},
		{name: "no rate", in: "  10 requests in 1.00s, 1KB read\n", wantErr: true},
		{name: "unknown latency unit", in: "     50%  3.00h\n  1 requests in 1.00s\nRequests/sec: 1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseWrk(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestCPUTimeOfSelf: the CPU time read from /proc grows while this process
// computes (busy until it grew by 30 ms, at most 10 s of wall time, so a
// loaded machine only makes it slower).
func TestCPUTimeOfSelf(t *testing.T) {
	ticks := clockTicks()
	before, err := cpuTime(os.Getpid(), ticks)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	sum := 0
	for time.Now().Before(deadline) {
		for i := range 1_000_000 {
			sum += i
		}
		now, err := cpuTime(os.Getpid(), ticks)
		if err != nil {
			t.Fatal(err)
		}
		if now-before >= 30*time.Millisecond {
			return
		}
	}
	t.Fatalf("CPU time grew by less than 30 ms in 10 s of busy loop (sum %d)", sum)
}
