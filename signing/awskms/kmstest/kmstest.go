// Package kmstest runs the local-kms emulator (github.com/nsmithuk/local-kms)
// as a child process on a loopback port, and returns a real AWS SDK KMS
// client for it. The emulator implements the KMS wire protocol with real
// keys; nothing is faked on the client side.
//
// The emulator is pinned in the tools module test/tools (go.mod and
// go.sum), not in the service's go.mod: it is built once per test process
// with `go tool -modfile=test/tools/go.mod local-kms`, which keeps the
// binary in the Go build cache, so the go command must be in PATH and the
// module proxy (or a warm module cache) reachable.
package kmstest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// Emulator is a running local-kms.
type Emulator struct {
	URL    string
	Client *kms.Client
	port   string
	dir    string
	mu     sync.Mutex
	proc   *process
}

// Start runs an emulator until t ends. Its data lives in t.TempDir().
func Start(t testing.TB) *Emulator {
	t.Helper()
	bin := binary(t)
	e := &Emulator{dir: t.TempDir(), port: "0"}
	if err := e.start(bin); err != nil {
		t.Fatal(err)
	}
	e.URL = "http://127.0.0.1:" + e.port
	e.Client = kms.New(kms.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(e.URL),
		Credentials:      aws.AnonymousCredentials{},
		RetryMaxAttempts: 1,
	})
	t.Cleanup(e.Stop)
	return e
}

// Stop kills the emulator (a fault test stops it under load); its keys
// stay on disk for Restart.
func (e *Emulator) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc != nil {
		e.proc.kill()
		e.proc = nil
	}
}

// Restart serves again on the same address with the same keys.
func (e *Emulator) Restart(t testing.TB) {
	t.Helper()
	if err := e.start(binary(t)); err != nil {
		t.Fatal(err)
	}
}

// CreateKey creates a signing key of spec and returns its ID.
func (e *Emulator) CreateKey(t testing.TB, spec types.KeySpec) string {
	t.Helper()
	out, err := e.Client.CreateKey(context.Background(), &kms.CreateKeyInput{KeySpec: spec, KeyUsage: types.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.KeyMetadata.KeyId)
}

// startedRE matches the line local-kms logs once it listens; with PORT=0
// it is the only way to learn the port it picked.
var startedRE = regexp.MustCompile(`Local KMS started on [^:\s]*:(\d+)`)

// startTimeout bounds the wait for the emulator's listener.
const startTimeout = 30 * time.Second

// start runs the binary on e.port (0: any free port, then recorded) with
// its database in e.dir, and returns once it listens.
func (e *Emulator) start(bin string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc != nil {
		return errors.New("kmstest: emulator already running")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin)
	// Only what local-kms reads: a KMS_ or AWS_ variable of the test's
	// environment must not change the emulator.
	cmd.Env = []string{
		"PORT=" + e.port,
		"KMS_REGION=us-east-1",
		"KMS_ACCOUNT_ID=111122223333",
		"KMS_DATA_PATH=" + filepath.Join(e.dir, "data"),
		"KMS_SEED_PATH=" + filepath.Join(e.dir, "no-seed.yaml"),
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return fmt.Errorf("kmstest: start local-kms: %w", err)
	}
	p := &process{cmd: cmd, drained: make(chan struct{})}
	port := make(chan string, 1)
	// The reader owns the pipe: it reports the port, keeps the last lines
	// for an error message, and drains until the process exits.
	go func() {
		defer close(p.drained)
		defer r.Close()
		s := bufio.NewScanner(r)
		for s.Scan() {
			p.keep(s.Text())
			if m := startedRE.FindStringSubmatch(s.Text()); m != nil {
				select {
				case port <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case got := <-port:
		if e.port != "0" && got != e.port {
			p.kill()
			return fmt.Errorf("kmstest: local-kms listens on %s, want %s", got, e.port)
		}
		e.port = got
		e.proc = p
		return nil
	case <-p.drained:
		p.kill()
		return fmt.Errorf("kmstest: local-kms exited before listening:\n%s", p.tail())
	case <-time.After(startTimeout):
		p.kill()
		return fmt.Errorf("kmstest: local-kms did not listen within %s:\n%s", startTimeout, p.tail())
	}
}

// process is one run of the emulator.
type process struct {
	cmd     *exec.Cmd
	drained chan struct{}
	mu      sync.Mutex
	last    []string
}

func (p *process) keep(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last = append(p.last, line); len(p.last) > 20 {
		p.last = p.last[1:]
	}
}

func (p *process) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.last, "\n")
}

// kill ends the process by its PID and waits for it and its reader.
func (p *process) kill() {
	_ = p.cmd.Process.Kill() // an error means it has already exited; Wait reports nothing useful then either
	_ = p.cmd.Wait()         // the exit status of a killed process is expected
	<-p.drained
}

var build struct {
	once sync.Once
	bin  string
	err  error
}

// binary builds local-kms once per test process from the tools module and
// returns the path of the executable (in the Go build cache).
func binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() { build.bin, build.err = buildBinary() })
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

func buildBinary() (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("kmstest: the go command is not in PATH: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The test runs in its package's directory, inside the main module.
	out, err := exec.CommandContext(ctx, goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("kmstest: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("kmstest: not inside the tokenservice module")
	}
	root := filepath.Dir(gomod)
	// go tool -n builds the tool into the build cache (once per version)
	// and prints its path instead of running it.
	cmd := exec.CommandContext(ctx, goTool, "tool", "-modfile="+filepath.Join(root, "test", "tools", "go.mod"), "-n", "local-kms")
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		return "", fmt.Errorf("kmstest: go tool -modfile=test/tools/go.mod -n local-kms: %v\n%s", err, stderr.String())
	}
	bin := strings.TrimSpace(string(out))
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("kmstest: local-kms was not built: %w", err)
	}
	return bin, nil
}

// Counter is a proxy in front of the emulator that counts the requests
// KMS receives, by operation (its X-Amz-Target: Sign, CreateKey, ...).
// While the emulator is stopped it answers 502 Bad Gateway, and counts
// those requests too.
type Counter struct {
	// URL is the proxy's endpoint, to use instead of the emulator's.
	URL string

	mu   sync.Mutex
	seen map[string]int
	lose map[string]lost
}

// lost is what LoseAnswers asked for one operation.
type lost struct {
	n      int
	status int
}

// LoseAnswers makes the proxy forward the next n requests of op to KMS
// and answer each with status and no body instead of KMS's answer: KMS
// acted, and the caller cannot know it (an answer lost to a network
// fault or a load balancer's 5xx).
func (c *Counter) LoseAnswers(op string, n, status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lose[op] = lost{n: n, status: status}
}

// Count starts a Counter in front of e; it stops with t.
func (e *Emulator) Count(t testing.TB) *Counter {
	t.Helper()
	target, err := url.Parse(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := &Counter{seen: map[string]int{}, lose: map[string]lost{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	// KMS down is what fault tests are about: a 502, not a log line.
	rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, op, _ := strings.Cut(r.Header.Get("X-Amz-Target"), ".") // TrentService.Sign
		c.mu.Lock()
		c.seen[op]++
		l := c.lose[op]
		if l.n > 0 {
			c.lose[op] = lost{n: l.n - 1, status: l.status}
		}
		c.mu.Unlock()
		if l.n > 0 {
			rp.ServeHTTP(httptest.NewRecorder(), r)
			w.WriteHeader(l.status)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

// Received returns how many requests of each operation KMS received.
func (c *Counter) Received() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.seen)
}
