package main

import (
	"fmt"
	"runtime"
	"slices"
	"time"
)

// serverOrder is the order of the rows.
var serverOrder = []string{"tokend", "tokend-purego", "node-oidc-provider", "hydra", "hydra-pbkdf2-1"}

func numCPU() int { return runtime.NumCPU() }

// printTable prints one Markdown table: per server, the median rate, the
// median over the rounds of tokend's rate divided by the server's (tokend's
// row: 1), the median CPU time per call, the median p50 and p99 (wrk's), the
// rates of each round, and the failed requests.
func printTable(title string, runs map[string][]run) {
	fmt.Printf("\n%s\n\n", title)
	fmt.Println("| server | req/s (median) | tokend ÷ server (median of rounds) | CPU µs/call | p50 ms | p99 ms | req/s per round | failed |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	base := runs["tokend"]
	for _, name := range serverOrder {
		rs, ok := runs[name]
		if !ok {
			continue
		}
		var rates, ratios, cpu, p50, p99 []float64
		failed := 0
		perRound := ""
		for i, r := range rs {
			rates = append(rates, r.rate)
			if i < len(base) && r.rate > 0 {
				ratios = append(ratios, base[i].rate/r.rate)
			}
			cpu = append(cpu, float64(r.cpuPerCall())/float64(time.Microsecond))
			p50 = append(p50, float64(r.p50)/float64(time.Millisecond))
			p99 = append(p99, float64(r.p99)/float64(time.Millisecond))
			failed += r.failed
			if i > 0 {
				perRound += " / "
			}
			perRound += fmt.Sprintf("%.0f", r.rate)
		}
		fmt.Printf("| %s | %.0f | %.2f | %.0f | %.2f | %.2f | %s | %d |\n",
			name, median(rates), median(ratios), median(cpu), median(p50), median(p99), perRound, failed)
	}
}

// median of v (0 when empty); v is sorted in place.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if n := len(v); n%2 == 1 {
		return v[n/2]
	} else {
		return (v[n/2-1] + v[n/2]) / 2
	}
}
