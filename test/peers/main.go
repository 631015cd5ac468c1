// Command peers measures tokend side by side with the token servers people
// deploy (issue 16): node-oidc-provider and Ory Hydra, both pinned
// (test/peers/node/package-lock.json, test/peers/hydra/go.mod), driven by
// one load generator, wrk, on loopback. `make bench-peers` installs
// everything and runs it; test/peers/README.md is its notebook.
//
// For each algorithm (ES256, RS256) it starts every server, then runs
// -rounds rounds; in each round every server gets one wrk run of -d at -c
// connections, in turn, so neighbours on a shared machine weigh on all of
// them alike. It reports, per server, the median rate, the median of the
// per-round ratios of tokend's rate to it, and the server's CPU time per
// call (from /proc/PID/stat across the run). The refresh comparison does
// the same with tokend's RefreshTokens and node-oidc-provider's
// refresh_token grant with rotation.
//
// `peers latency` runs the Go load generator of latency.go instead.
//
// Every process it starts is stopped by its PID when it ends, on an error
// or on SIGINT/SIGTERM; -timeout bounds the whole run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// harness holds the tools and the processes of one run.
type harness struct {
	dir     string // test/peers
	nodeDir string // test/peers/node
	work    string // temporary folder of this run
	bin     string // folder of the tokend builds and hydra
	wrk     string
	node    string
	hydra   string
	ticks   float64
	procs   procs
}

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	args := os.Args[1:]
	mode := "peers"
	if len(args) > 0 && args[0] == "latency" {
		mode, args = "latency", args[1:]
	}
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	var (
		dir     = fs.String("dir", "test/peers", "folder of this harness (wrk scripts, node/)")
		bin     = fs.String("bin", "bin/peers", "folder of the builds: tokend (release), tokend-purego (optional), hydra")
		timeout = fs.Duration("timeout", 20*time.Minute, "bound of the whole run")
	)
	var body func(context.Context, *harness) error
	if mode == "latency" {
		body = latencyFlags(fs)
	} else {
		body = peersFlags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The servers run in folders of their own: paths must be absolute.
	for _, p := range []*string{dir, bin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	work, err := os.MkdirTemp("", "tokend-peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	h := &harness{dir: *dir, nodeDir: filepath.Join(*dir, "node"), work: work, bin: *bin, ticks: clockTicks()}
	defer h.procs.stopAll()
	return body(ctx, h)
}

// peersFlags registers the flags of the peers mode on fs and returns it.
func peersFlags(fs *flag.FlagSet) func(context.Context, *harness) error {
	var (
		algs    = fs.String("algs", "ES256,RS256", "algorithms to measure")
		servers = fs.String("servers", "tokend,tokend-purego,node-oidc-provider,hydra", "servers to run (a missing tokend-purego build is skipped); hydra-pbkdf2-1 is Hydra with one PBKDF2 iteration for client secrets instead of its default 25,000")
		conns   = fs.Int("c", 8, "connections (concurrency) of every run")
		dur     = fs.Duration("d", 3*time.Second, "length of one run (whole seconds)")
		rounds  = fs.Int("rounds", 3, "rounds; each runs every server once")
		loads   = fs.String("workloads", "generate,refresh", "generate (a JWT access token per call), refresh (refresh-token rotation: tokend, node-oidc-provider)")
	)
	return func(ctx context.Context, h *harness) error {
		var err error
		if h.wrk, err = exec.LookPath("wrk"); err != nil {
			return fmt.Errorf("wrk not found (make bench-peers installs it): %w", err)
		}
		if h.node, err = exec.LookPath("node"); err != nil {
			return fmt.Errorf("node not found: %w", err)
		}
		h.hydra = filepath.Join(h.bin, "hydra")
		h.printMachine(ctx)
		fmt.Printf("\nwrk -t1 -c%d -d%s, %d rounds, servers in turn within each round\n", *conns, durationArg(*dur), *rounds)
		for _, alg := range strings.Split(*algs, ",") {
			if err := h.compare(ctx, alg, strings.Split(*servers, ","), *conns, *dur, *rounds, strings.Split(*loads, ",")); err != nil {
				return err
			}
		}
		return nil
	}
}

// compare starts every server for alg, runs the rounds and prints the
// tables, then stops the servers.
func (h *harness) compare(ctx context.Context, alg string, names []string, conns int, d time.Duration, rounds int, loads []string) error {
	defer h.procs.stopAll()
	var targets []*target
	for _, name := range names {
		var t *target
		var err error
		switch name {
		case "tokend", "tokend-purego":
			bin := filepath.Join(h.bin, name)
			if _, statErr := os.Stat(bin); statErr != nil {
				if name == "tokend" {
					return fmt.Errorf("%s missing (make bench-peers builds it)", bin)
				}
				continue
			}
			t, err = h.startTokend(ctx, name, bin, alg)
		case "node-oidc-provider":
			t, err = h.startNode(ctx, alg)
		case "hydra", "hydra-pbkdf2-1":
			t, err = h.startHydra(ctx, name, alg)
		default:
			err = fmt.Errorf("unknown server %q", name)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", name, alg, err)
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 || targets[0].name != "tokend" {
		return errors.New("tokend must be the first server")
	}
	if slices.Contains(loads, "generate") {
		runs, err := h.rounds(ctx, targets, conns, d, rounds, func(t *target) (workload, bool) { return t.generate, true }, false)
		if err != nil {
			return err
		}
		printTable(fmt.Sprintf("%s: a JWT access token per call (tokend: GenerateTokens, Connect JSON over HTTP/1.1; peers: client_credentials)", alg), runs)
	}
	if !slices.Contains(loads, "refresh") {
		return nil
	}
	runs, err := h.rounds(ctx, targets, conns, d, rounds, func(t *target) (workload, bool) {
		if t.refresh == nil {
			return workload{}, false
		}
		return *t.refresh, true
	}, true)
	if err != nil {
		return err
	}
	printTable(fmt.Sprintf("%s: refresh-token rotation (tokend: RefreshTokens, Connect JSON over HTTP/1.1; node-oidc-provider: refresh_token grant, rotateRefreshToken)", alg), runs)
	return nil
}

// rounds runs one warm-up of 1 s for each target, then rounds rounds of
// one run per target; pick chooses each target's workload (false: skip).
func (h *harness) rounds(ctx context.Context, targets []*target, conns int, d time.Duration, rounds int,
	pick func(*target) (workload, bool), seeded bool) (map[string][]run, error) {
	out := map[string][]run{}
	for r := 0; r <= rounds; r++ {
		for i := range targets {
			// Turn the order each round, so that no server always follows
			// the same neighbour.
			t := targets[(i+r)%len(targets)]
			w, ok := pick(t)
			if !ok {
				continue
			}
			var tokens []string
			if seeded {
				var err error
				if tokens, err = t.seed(ctx, conns); err != nil {
					return nil, fmt.Errorf("%s: seed refresh tokens: %w", t.name, err)
				}
			}
			dd := d
			if r == 0 {
				dd = time.Second // warm-up, not reported
			}
			res, err := h.wrkRun(ctx, t, w, conns, dd, tokens)
			if err != nil {
				return nil, err
			}
			if r > 0 {
				out[t.name] = append(out[t.name], res)
			}
		}
	}
	return out, nil
}

// printMachine prints what the figures depend on.
func (h *harness) printMachine(ctx context.Context) {
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	version := func(bin string, args ...string) string {
		// wrk -v exits with 1 after printing its version.
		out, _ := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if len(out) == 0 {
			return "?"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	fmt.Printf("date %s\nmachine %s, %d CPUs (shared with other sessions), load %s\n",
		time.Now().UTC().Format(time.RFC3339), model, numCPU(), strings.TrimSpace(string(load)))
	if h.wrk != "" {
		fmt.Printf("%s; node %s\n", version(h.wrk, "-v"), version(h.node, "--version"))
	}
	fmt.Printf("%s\n%s\n", version("go", "version", filepath.Join(h.bin, "tokend")), version("go", "version", filepath.Join(h.bin, "tokend-purego")))
}
