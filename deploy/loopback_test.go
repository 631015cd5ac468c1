package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loopbackEnv returns the environment of a run of loopback/run.sh: a fresh
// work directory and free base ports, three consecutive ones each.
func loopbackEnv(t *testing.T) (env []string, work string, tokendBase int) {
	t.Helper()
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("loopback/run.sh needs %s: %v", tool, err)
		}
	}
	work = t.TempDir()
	var bases []int
	for _, name := range []string{"NATS_CLIENT_PORT_BASE", "NATS_CLUSTER_PORT_BASE", "NATS_MONITOR_PORT_BASE", "TOKEND_PORT_BASE"} {
		b := freePortRange(t, 3, bases)
		bases = append(bases, b)
		env = append(env, fmt.Sprintf("%s=%d", name, b))
	}
	env = append(os.Environ(), append(env, "WORK_DIR="+work, "READY_TIMEOUT=90")...)
	return env, work, bases[3]
}

// freePortRange returns a base port b such that b, b+1, ... b+n-1 are free
// on 127.0.0.1 and clear of the ranges in taken. It picks below Linux's
// ephemeral range, so a client socket is unlikely to take one meanwhile.
func freePortRange(t *testing.T, n int, taken []int) int {
	t.Helper()
next:
	for range 200 {
		b := 20000 + rand.IntN(12000)
		for _, o := range taken {
			if b > o-n && b < o+n {
				continue next
			}
		}
		var ls []net.Listener
		ok := true
		for p := b; p < b+n; p++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return b
		}
	}
	t.Fatal("no free port range")
	return 0
}

// startScript starts run.sh in its own process group, so that the test
// can tell whether anything it started is left, and can end the group if
// the script fails to.
func startScript(t *testing.T, ctx context.Context, env []string, out io.Writer, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, "bash", append([]string{"loopback/run.sh"}, args...)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 60 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		// Only if the assertions below already failed: do not leave
		// servers running after the test.
		if syscall.Kill(-pgid, 0) == nil {
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
	})
	return cmd
}

// assertAllStopped checks that every process the script recorded in
// WORK_DIR/pids, and everything else in its process group, is gone.
func assertAllStopped(t *testing.T, cmd *exec.Cmd, work string, want int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(work, "pids"))
	if err != nil {
		t.Fatalf("the script recorded no PIDs: %v", err)
	}
	pids := strings.Fields(string(b))
	if len(pids) != want {
		t.Errorf("the script started %d processes (%q), want %d", len(pids), pids, want)
	}
	deadline := time.Now().Add(5 * time.Second) // orphans are reaped by init
	for {
		var alive []string
		for _, p := range pids {
			pid, err := strconv.Atoi(p)
			if err != nil {
				t.Fatalf("pids file: %q", p)
			}
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				alive = append(alive, p)
			}
		}
		groupGone := errors.Is(syscall.Kill(-cmd.Process.Pid, 0), syscall.ESRCH)
		if len(alive) == 0 && groupGone {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the script exited: processes %q still running, process group gone: %v", alive, groupGone)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLoopbackScript runs loopback/run.sh --check on free ports: it builds
// nats-server and tokend, starts a 3-node JetStream cluster and 3 tokend
// replicas sharing one encryption key, issues tokens on replica 1, rotates
// them on replica 2, finds the same JWKS on all three, finds that every
// NATS server refuses a connection without credentials, revokes the
// family and reads the revocation, as a resource server, from the mirror
// of the feed in SUBSCRIBERS, where every message is a feed message, and
// stops everything. The test checks the outcome the script reports, that no
// process it started is left, and the NATS configurations it wrote with
// deploy/lint (authorization and TLS).
func TestLoopbackScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tokend and nats-server and runs a cluster (about 15s)")
	}
	env, work, _ := loopbackEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := startScript(t, ctx, env, &out, "--check")
	err := cmd.Wait()
	t.Logf("run.sh --check:\n%s", out.String())
	if err != nil {
		t.Fatalf("run.sh --check: %v", err)
	}
	for _, want := range []string{
		"loopback: ready in ",
		"check: GenerateTokens on tokend-1: family ",
		"check: RefreshTokens on tokend-2: rotated within family ",
		"check: JWKS identical on 3 replicas (same bytes and ETag",
		"check: a connection without credentials is refused by the 3 servers",
		"check: the resource server read the revocation of ",
		"are all feed messages",
		"check: ok",
		"loopback: stopping 6 processes",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if fi, err := os.Stat(filepath.Join(work, "encryption.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("encryption.key: %v, mode %v; want one file of mode 0600", err, fi.Mode())
	}
	assertAllStopped(t, cmd, work, 6)
	lintLoopbackNATS(t, work)
}

// envInt returns the integer value of name in env.
func envInt(t *testing.T, env []string, name string) int {
	t.Helper()
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in the environment", name)
	return 0
}

// TestLoopbackScriptInterrupt runs loopback/run.sh as a person would,
// calls every replica while it runs, checks the NATS cluster's
// authorization with real clients (assertLoopbackNATS), then presses
// Ctrl-C (SIGINT): the script must stop all six processes it started and
// exit.
func TestLoopbackScriptInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tokend and nats-server and runs a cluster (about 15s)")
	}
	env, work, base := loopbackEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	pr, pw := io.Pipe()
	var out bytes.Buffer
	cmd := startScript(t, ctx, env, pw)
	ready := make(chan bool, 1)
	read := make(chan struct{}) // closed once out holds all the output
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		seen := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !seen && strings.Contains(sc.Text(), "Ctrl-C stops everything") {
				seen = true
				ready <- true
			}
		}
		if !seen {
			ready <- false
		}
	}()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait(); pw.Close() }()
	if !<-ready {
		err := <-waitErr
		<-read
		t.Fatalf("run.sh exited before it was ready: %v\n%s", err, out.String())
	}
	client := &http.Client{Timeout: 10 * time.Second}
	var fid string
	for i := range 3 {
		url := fmt.Sprintf("http://127.0.0.1:%d/token.v1.TokenService/GenerateTokens", base+i)
		resp, err := client.Post(url, "application/json", strings.NewReader(`{"subject":"interrupt","client_id":"web","audience":["api"]}`))
		if err != nil {
			t.Fatalf("replica %d: %v", i+1, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"refreshToken"`)) {
			t.Errorf("replica %d: GenerateTokens: %s %s", i+1, resp.Status, body)
		}
		var gen struct{ FamilyID string }
		if err := json.Unmarshal(body, &gen); err == nil && gen.FamilyID != "" {
			fid = gen.FamilyID
		}
	}
	if fid == "" {
		t.Fatal("no familyId from GenerateTokens")
	}
	assertLoopbackNATS(t, work, envInt(t, env, "NATS_CLIENT_PORT_BASE"), base, fid)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := <-waitErr
	<-read
	t.Logf("run.sh:\n%s", out.String())
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Errorf("after SIGINT run.sh ended with %v, want exit status 130", err)
	}
	if !strings.Contains(out.String(), "loopback: stopping 6 processes") {
		t.Error("the script did not say it stopped its 6 processes")
	}
	assertAllStopped(t, cmd, work, 6)
}
