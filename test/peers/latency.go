package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/signing"
)

// The latency mode (issue 16, part 4): a Go load generator that records
// the latency of every request to one tokend process, for GenerateTokens,
// RefreshTokens and ValidateDPoP, over h2c (Connect protocol, protobuf)
// and over HTTP/1.1 (Connect protocol, JSON), at each concurrency. A cell
// (call, transport, concurrency) runs until -n requests or -d, whichever
// comes first; every round runs every cell once, the transports of a cell
// next to each other.

const (
	tokenURL    = "https://as.example.com/token"
	resourceURL = "https://api.example.com/orders"
)

// cell is one measured (call, transport, concurrency).
type cell struct {
	call, transport string
	conc            int
}

// sample is what one run of a cell measured.
type sample struct {
	n, failed int
	rate      float64
	p50, p99  time.Duration
	cpu       time.Duration // tokend's CPU time per request
}

// latencyFlags registers the flags of the latency mode on fs and returns it.
func latencyFlags(fs *flag.FlagSet) func(context.Context, *harness) error {
	var (
		alg        = fs.String("alg", "ES256", "signing algorithm of tokend")
		build      = fs.String("build", "tokend", "tokend build in -bin to measure")
		concs      = fs.String("conc", "1,16,64", "concurrencies")
		calls      = fs.String("calls", "GenerateTokens,RefreshTokens,ValidateDPoP", "calls")
		transports = fs.String("transports", "h2c,http1-json", "transports: h2c (protobuf), http1-json")
		dur        = fs.Duration("d", 2*time.Second, "bound of one cell's time")
		maxN       = fs.Int("n", 20000, "bound of one cell's requests")
		rounds     = fs.Int("rounds", 3, "rounds")
	)
	return func(ctx context.Context, h *harness) error {
		return h.latency(ctx, *alg, *build, *concs, *calls, *transports, *dur, *maxN, *rounds)
	}
}

func (h *harness) latency(ctx context.Context, alg, build, concs, calls, transports string, dur time.Duration, maxN, rounds int) error {
	h.printMachine(ctx)
	t, err := h.startTokend(ctx, build, filepath.Join(h.bin, build), alg)
	if err != nil {
		return err
	}
	clients := map[string]tokenv1connect.TokenServiceClient{}
	for _, tr := range strings.Split(transports, ",") {
		c, closeIdle, err := newClient(tr, t.base)
		if err != nil {
			return err
		}
		defer closeIdle()
		clients[tr] = c
	}
	var cells []cell
	for _, c := range strings.Split(concs, ",") {
		conc, err := strconv.Atoi(c)
		if err != nil {
			return fmt.Errorf("-conc: %w", err)
		}
		for _, call := range strings.Split(calls, ",") {
			for _, tr := range strings.Split(transports, ",") {
				cells = append(cells, cell{call: call, transport: tr, conc: conc})
			}
		}
	}
	fmt.Printf("\nlatency: %s %s, cells of at most %d requests or %s, %d rounds, load generator in Go in its own process\n",
		build, alg, maxN, dur, rounds)
	key := dpoptest.NewKey(signing.ES256)
	results := map[cell][]sample{}
	for r := 0; r < rounds; r++ {
		for _, c := range cells {
			s, err := h.runCell(ctx, t, clients[c.transport], key, c, dur, maxN)
			if err != nil {
				return fmt.Errorf("%s over %s at c=%d: %w", c.call, c.transport, c.conc, err)
			}
			results[c] = append(results[c], s)
		}
	}
	fmt.Println("\n| call | transport | c | p50 ms | p99 ms | req/s | tokend CPU µs/call | p99 per round | failed |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, c := range cells {
		ss := results[c]
		var p50, p99, rate, cpu []float64
		per, failed := "", 0
		for i, s := range ss {
			p50 = append(p50, msf(s.p50))
			p99 = append(p99, msf(s.p99))
			rate = append(rate, s.rate)
			cpu = append(cpu, float64(s.cpu)/float64(time.Microsecond))
			failed += s.failed
			if i > 0 {
				per += " / "
			}
			per += fmt.Sprintf("%.2f", msf(s.p99))
		}
		fmt.Printf("| %s | %s | %d | %.2f | %.2f | %.0f | %.0f | %s | %d |\n",
			c.call, c.transport, c.conc, median(p50), median(p99), median(rate), median(cpu), per, failed)
	}
	return nil
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// newClient is a Connect client of base over transport: "h2c" (HTTP/2
// cleartext, no HTTP/1 fallback, protobuf) or "http1-json" (HTTP/1.1 only,
// JSON, one connection per concurrent call).
func newClient(transport, base string) (tokenv1connect.TokenServiceClient, func(), error) {
	switch transport {
	case "h2c":
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: p}
		return tokenv1connect.NewTokenServiceClient(&http.Client{Transport: tr}, base), tr.CloseIdleConnections, nil
	case "http1-json":
		p := new(http.Protocols)
		p.SetHTTP1(true)
		tr := &http.Transport{Protocols: p, MaxIdleConnsPerHost: 256}
		return tokenv1connect.NewTokenServiceClient(&http.Client{Transport: tr}, base, connect.WithProtoJSON()), tr.CloseIdleConnections, nil
	}
	return nil, nil, fmt.Errorf("unknown transport %q", transport)
}

// runCell prepares c's workers (untimed: families, proofs), then runs them
// until maxN requests or d, and measures every request.
func (h *harness) runCell(ctx context.Context, t *target, client tokenv1connect.TokenServiceClient, key dpoptest.Key, c cell, d time.Duration, maxN int) (sample, error) {
	do, err := prepare(ctx, client, key, c, maxN)
	if err != nil {
		return sample{}, err
	}
	lat := make([][]time.Duration, c.conc)
	var next, failed atomic.Int64
	var firstErr error
	var once sync.Once
	cpu0, err := cpuTime(t.p.pid(), h.ticks)
	if err != nil {
		return sample{}, err
	}
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range c.conc {
		wg.Go(func() {
			for {
				n := int(next.Add(1)) - 1
				if n >= maxN || time.Now().After(deadline) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := do(ctx, w, n)
				if err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
					return // a worker's chain (refresh) is broken
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, err := cpuTime(t.p.pid(), h.ticks)
	if err != nil {
		return sample{}, err
	}
	if firstErr != nil {
		return sample{}, fmt.Errorf("%d failed, first: %w", failed.Load(), firstErr)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return sample{}, errors.New("no request completed")
	}
	return sample{
		n: len(all), rate: float64(len(all)) / elapsed.Seconds(),
		p50: all[len(all)*50/100], p99: all[min(len(all)-1, len(all)*99/100)],
		cpu: (cpu1 - cpu0) / time.Duration(len(all)),
	}, nil
}

// prepare returns the request of c's call: do(ctx, worker, n) sends
// request n of worker.
func prepare(ctx context.Context, client tokenv1connect.TokenServiceClient, key dpoptest.Key, c cell, maxN int) (func(context.Context, int, int) error, error) {
	generate := func(subject string) *tokenv1.GenerateTokensRequest {
		return &tokenv1.GenerateTokensRequest{Subject: subject, ClientId: benchClient, Audience: []string{"api"}, Scopes: []string{"api"}}
	}
	switch c.call {
	case "GenerateTokens":
		return func(ctx context.Context, _, n int) error {
			resp, err := client.GenerateTokens(ctx, connect.NewRequest(generate("latency-"+strconv.Itoa(n))))
			if err == nil && resp.Msg.GetAccessToken() == "" {
				err = errors.New("no access token")
			}
			return err
		}, nil
	case "RefreshTokens":
		current := make([]string, c.conc) // one family per worker
		for w := range current {
			resp, err := client.GenerateTokens(ctx, connect.NewRequest(generate("latency-refresh-"+strconv.Itoa(w))))
			if err != nil {
				return nil, err
			}
			current[w] = resp.Msg.GetRefreshToken()
		}
		return func(ctx context.Context, w, _ int) error {
			resp, err := client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: current[w], ClientId: benchClient}))
			if err != nil {
				return err
			}
			if next := resp.Msg.GetRefreshToken(); next == "" || next == current[w] {
				return errors.New("refresh token not rotated")
			}
			current[w] = resp.Msg.GetRefreshToken()
			return nil
		}, nil
	case "ValidateDPoP":
		req := generate("latency-dpop")
		req.DpopProof, req.HttpMethod, req.HttpUri = key.Proof("POST", tokenURL, time.Now()), "POST", tokenURL
		bound, err := client.GenerateTokens(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		at := bound.Msg.GetAccessToken()
		ath := dpoptest.ATH(at)
		// A fresh proof per request (its jti is claimed in the log), made
		// before the cell is timed.
		proofs := make([]string, maxN)
		now := time.Now()
		for i := range proofs {
			proofs[i] = key.Proof("GET", resourceURL, now, func(p *dpoptest.Parts) { p.Claims["ath"] = ath })
		}
		return func(ctx context.Context, _, n int) error {
			resp, err := client.ValidateDPoP(ctx, connect.NewRequest(&tokenv1.ValidateDPoPRequest{
				Proof: proofs[n], HttpMethod: "GET", HttpUri: resourceURL, AccessToken: at,
			}))
			if err != nil {
				return err
			}
			if !resp.Msg.GetValid() {
				return errors.New(resp.Msg.GetError() + ": " + resp.Msg.GetErrorDescription())
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("unknown call %q", c.call)
}
