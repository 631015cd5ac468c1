// Package e2e drives tokend from outside: in process through app.Start,
// and as a child process built from cmd/tokend that the tests kill,
// terminate and restart on the same data directory. Every check goes
// through a public surface only: the Connect API, the JWKS endpoint and the
// TOKENS stream as a NATS subscriber sees it.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

// testEncryptionKey is a fixed ENCRYPTION_KEY (base64 of 32 bytes): a
// restarted child must unseal what the killed one sealed.
var testEncryptionKey = base64.StdEncoding.EncodeToString([]byte("e2e-test-key-0123456789abcdefghi"))

// serviceNkey returns the option that authenticates as the service's NATS
// user, derived from testEncryptionKey as tokend derives it: the e2e
// clusters list its public key, and tokend's embedded servers admit it.
func serviceNkey(t testing.TB) nats.Option {
	t.Helper()
	return eventlog.NkeyOption(serviceKey(t))
}

func serviceKey(t testing.TB) nkeys.KeyPair {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(testEncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := eventlog.ServiceKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// Defaults of the stream and subject scheme (NATS_STREAM, NATS_SUBJECT_PREFIX).
const (
	streamName    = "TOKENS"
	subjectPrefix = "token"
)

var (
	buildDirOnce sync.Once
	buildDir     string
	buildDirErr  error
	builds       sync.Map // package path → *build
)

type build struct {
	once sync.Once
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// tokendBinary builds cmd/tokend once per test run.
func tokendBinary(t testing.TB) string { return goBinary(t, "./cmd/tokend", "tokend") }

// natsServerBinary builds nats-server from the module go.mod requires, so
// that tests can SIGKILL a NATS node as a process.
func natsServerBinary(t testing.TB) string {
	return goBinary(t, "github.com/nats-io/nats-server/v2", "nats-server")
}

// goBinary builds pkg once per test run. The binary lives in a directory
// of the run, not of one test, because several tests use it; TestMain
// removes it.
func goBinary(t testing.TB, pkg, name string) string {
	t.Helper()
	buildDirOnce.Do(func() { buildDir, buildDirErr = os.MkdirTemp("", "tokend-e2e-") })
	if buildDirErr != nil {
		t.Fatal(buildDirErr)
	}
	v, _ := builds.LoadOrStore(pkg, &build{})
	b := v.(*build)
	b.once.Do(func() {
		b.bin = filepath.Join(buildDir, name)
		goTool, err := exec.LookPath("go")
		if err != nil {
			b.err = fmt.Errorf("the go command is not in PATH: %w", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// The test runs in test/e2e; the module root is two levels up.
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", b.bin, pkg)
		cmd.Dir = filepath.Join("..", "..")
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// childEnv is the environment of one tokend child: its own data
// directory and loopback ports, nothing inherited from the test's
// environment (a NATS_URL there must not redirect the child).
type childEnv struct {
	DataDir  string
	HTTPPort int
	NATSPort int
	Extra    map[string]string
}

func newChildEnv(t testing.TB, extra map[string]string) childEnv {
	ports := eventlogtest.FreePorts(t, 2)
	return childEnv{DataDir: t.TempDir(), HTTPPort: ports[0], NATSPort: ports[1], Extra: extra}
}

func (e childEnv) environ() []string {
	vars := map[string]string{
		"DATA_DIR":            e.DataDir,
		"HOST":                "127.0.0.1",
		"PORT":                strconv.Itoa(e.HTTPPort),
		"NATS_LISTEN":         fmt.Sprintf("127.0.0.1:%d", e.NATSPort),
		"ENCRYPTION_KEY":      testEncryptionKey,
		"LOG_LEVEL":           "warn",
		"LOG_FORMAT":          "text",
		"REFRESH_REUSE_GRACE": "0",
	}
	for k, v := range e.Extra {
		vars[k] = v
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func (e childEnv) baseURL() string { return fmt.Sprintf("http://127.0.0.1:%d", e.HTTPPort) }
func (e childEnv) natsURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", e.NATSPort) }

// child is one running tokend process.
type child struct {
	t       testing.TB
	cmd     *exec.Cmd
	pid     int
	logPath string
	started time.Time     // just before the exec
	done    chan struct{} // closed when the process was reaped
	state   *os.ProcessState
}

// startChild starts tokend with env. A cleanup stops it (SIGTERM, then
// SIGKILL) if the test did not, and shows its log if the test failed.
func startChild(t testing.TB, env childEnv) *child {
	t.Helper()
	return startProcess(t, tokendBinary(t), nil, env.environ())
}

// startProcess starts bin with args and exactly the environment environ.
// A cleanup stops it (SIGTERM, then SIGKILL) if the test did not, and
// shows its log if the test failed.
func startProcess(t testing.TB, bin string, args, environ []string) *child {
	t.Helper()
	logFile, err := os.CreateTemp(t.TempDir(), filepath.Base(bin)+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = environ
	cmd.Stdout = logFile // an *os.File is handed to the child: no copying goroutine
	cmd.Stderr = logFile
	dieWithParent(cmd)
	started := time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	logFile.Close() // the child holds its own descriptor
	c := &child{t: t, cmd: cmd, pid: cmd.Process.Pid, logPath: logFile.Name(), started: started, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the exit status is read from ProcessState
		c.state = cmd.ProcessState
		close(c.done)
	}()
	t.Cleanup(func() {
		if c.running() {
			c.stop(10 * time.Second)
		}
		if t.Failed() {
			t.Logf("log of %s pid %d:\n%s", filepath.Base(bin), c.pid, c.logTail(8<<10))
		}
	})
	return c
}

func (c *child) running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

func (c *child) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return string(b)
}

// signal sends sig to the child's pid (never to a process group or by
// name).
func (c *child) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := syscall.Kill(c.pid, sig); err != nil && c.running() {
		c.t.Errorf("kill -%d %d: %v", sig, c.pid, err)
	}
}

// wait waits up to d for the child to exit and reports whether it did.
func (c *child) wait(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill sends SIGKILL and waits for the process to be reaped.
func (c *child) kill() {
	c.t.Helper()
	c.signal(syscall.SIGKILL)
	if !c.wait(10 * time.Second) {
		c.t.Fatalf("tokend pid %d still running 10s after SIGKILL", c.pid)
	}
}

// stop sends SIGTERM and waits up to grace, then SIGKILL. It returns the
// exit code (-1 if a signal ended the process) and how long the exit took
// after SIGTERM.
func (c *child) stop(grace time.Duration) (code int, took time.Duration) {
	c.t.Helper()
	start := time.Now()
	c.signal(syscall.SIGTERM)
	if !c.wait(grace) {
		c.t.Errorf("tokend pid %d did not exit within %s of SIGTERM; sending SIGKILL", c.pid, grace)
		c.kill()
	}
	return c.state.ExitCode(), time.Since(start)
}

// waitReady polls GET /readyz until 200, the child exits or the deadline.
func (c *child) waitReady(baseURL string, timeout time.Duration) {
	c.t.Helper()
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := hc.Get(baseURL + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if !c.running() {
			c.t.Fatalf("tokend pid %d exited before it was ready (%v):\n%s", c.pid, c.state, c.logTail(8<<10))
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("tokend pid %d not ready within %s (last: %v)", c.pid, timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// HTTP clients. http1Client speaks HTTP/1.1 only; h2cClient speaks only
// HTTP/2 over cleartext, so a server without h2c fails every call.
func http1Client() *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 32, DisableCompression: true}
	return &http.Client{Transport: tr}
}

func h2cClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}

func tokenClient(hc *http.Client, baseURL string) tokenv1connect.TokenServiceClient {
	return tokenv1connect.NewTokenServiceClient(hc, baseURL)
}

// generate and refresh wrap one call each with a bounded deadline.
func generate(ctx context.Context, c tokenv1connect.TokenServiceClient, req *tokenv1.GenerateTokensRequest) (*tokenv1.TokenResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := c.GenerateTokens(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func refresh(ctx context.Context, c tokenv1connect.TokenServiceClient, clientID, rt string) (*tokenv1.TokenResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := c.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: rt, ClientId: clientID}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// fetchJWKS reads GET /.well-known/jwks.json.
func fetchJWKS(t *testing.T, hc *http.Client, baseURL string) (jose.JSONWebKeySet, []byte, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/.well-known/jwks.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET jwks: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("read jwks: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET jwks: %s: %s", resp.Status, body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("go-jose cannot parse the JWKS: %v\n%s", err, body)
	}
	return set, body, resp.Header
}

// accessClaims are the claims of an RFC 9068 access token, with the types
// the token must have: a wrongly typed claim fails the JSON decoding.
type accessClaims struct {
	Iss      string   `json:"iss"`
	Sub      string   `json:"sub"`
	Aud      []string `json:"aud"`
	ClientID string   `json:"client_id"`
	Iat      int64    `json:"iat"`
	Exp      int64    `json:"exp"`
	Jti      string   `json:"jti"`
	Scope    string   `json:"scope"`
	Sid      string   `json:"sid"`
}

// verifiedToken is an access token go-jose verified.
type verifiedToken struct {
	Header  jose.Header
	Payload []byte
	Claims  accessClaims
}

// verifyAccessToken verifies token with go-jose against keys: only alg is
// accepted and the key is the one of the kid header.
func verifyAccessToken(keys jose.JSONWebKeySet, token string, alg jose.SignatureAlgorithm) (verifiedToken, error) {
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{alg})
	if err != nil {
		return verifiedToken{}, fmt.Errorf("parse: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return verifiedToken{}, fmt.Errorf("%d signatures", len(jws.Signatures))
	}
	h := jws.Signatures[0].Protected
	if h.KeyID == "" {
		return verifiedToken{}, errors.New("no kid in the protected header")
	}
	matching := keys.Key(h.KeyID)
	if len(matching) != 1 {
		return verifiedToken{}, fmt.Errorf("kid %q matches %d keys of the JWKS", h.KeyID, len(matching))
	}
	payload, err := jws.Verify(matching[0])
	if err != nil {
		return verifiedToken{}, fmt.Errorf("verify: %w", err)
	}
	var c accessClaims
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&c); err != nil {
		return verifiedToken{}, fmt.Errorf("claims: %w", err)
	}
	return verifiedToken{Header: h, Payload: payload, Claims: c}, nil
}

// ackedFamily is what a client was told about one family: its refresh
// token of the last acknowledged response, and how many rotations of it
// were acknowledged.
type ackedFamily struct {
	ClientID     string
	RefreshToken string
	Rotations    int
}

// ledger records acknowledged responses. A family is written by one
// goroutine only; the lock is for the reader.
type ledger struct {
	mu       sync.Mutex
	families map[string]*ackedFamily
	acks     int
}

func newLedger() *ledger { return &ledger{families: map[string]*ackedFamily{}} }

func (l *ledger) ack(fid, clientID, rt string, rotations int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.families[fid] = &ackedFamily{ClientID: clientID, RefreshToken: rt, Rotations: rotations}
	l.acks++
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acks
}

func (l *ledger) snapshot() map[string]ackedFamily {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]ackedFamily, len(l.families))
	for fid, f := range l.families {
		out[fid] = *f
	}
	return out
}

// storedFamily is one family as the TOKENS stream holds it.
type storedFamily struct {
	Issued, Rotated, Revoked int
	Events                   []string // event names in stream order
	LastSeq                  uint64
	LastType                 string // Token-Event header of the last event
	State                    *eventsv1.FamilyState
}

// readFamilies reads every family event of the stream at natsURL with an
// ordered consumer, as an outside subscriber would, and decodes each
// family's last state from its Token-Event header. The last event of each
// family is read a second time with GetLastMsgForSubject, the lookup the
// service itself relies on; both must agree.
func readFamilies(t *testing.T, natsURL string) map[string]*storedFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := nats.Connect(natsURL, serviceNkey(t), nats.Name("e2e-reader"), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to %s: %v", natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, streamName)
	if err != nil {
		t.Fatalf("stream %s: %v", streamName, err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjectPrefix + ".family.>"},
	})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	out := map[string]*storedFamily{}
	lastPayload := map[string][]byte{}
	pending := info.NumPending
	for pending > 0 {
		if ctx.Err() != nil {
			t.Fatalf("reading the stream: %d messages still pending: %v", pending, ctx.Err())
		}
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if errors.Is(err, nats.ErrNoResponders) {
			// The consumer's server is still taking its place in a cluster
			// that has just had a node restarted: ask again.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatalf("metadata: %v", err)
			}
			pending = md.NumPending
			fid, event, ok := parseFamilySubject(m.Subject())
			if !ok {
				t.Fatalf("unexpected subject %q in the family filter", m.Subject())
			}
			f := out[fid]
			if f == nil {
				f = &storedFamily{}
				out[fid] = f
			}
			f.Events = append(f.Events, event)
			switch event {
			case "issued":
				f.Issued++
			case "rotated":
				f.Rotated++
			case "revoked":
				f.Revoked++
			}
			f.LastSeq = md.Sequence.Stream
			f.LastType = m.Headers().Get("Token-Event")
			lastPayload[fid] = m.Data()
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("fetch: %v", err)
		}
	}
	for fid, f := range out {
		st, err := decodeFamilyState(f.LastType, lastPayload[fid])
		if err != nil {
			t.Errorf("family %s: last event (seq %d): %v", fid, f.LastSeq, err)
			continue
		}
		f.State = st
	}
	// Cross-check the last event per family through a direct get. Bounded:
	// the tests store at most a few thousand families.
	for fid, f := range out {
		m, err := stream.GetLastMsgForSubject(ctx, subjectPrefix+".family."+fid+".>")
		if err != nil {
			t.Fatalf("family %s: last message: %v", fid, err)
		}
		if m.Sequence != f.LastSeq {
			t.Errorf("family %s: last message seq %d by direct get, %d by the consumer", fid, m.Sequence, f.LastSeq)
		}
	}
	return out
}

func parseFamilySubject(s string) (fid, event string, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != subjectPrefix || parts[1] != "family" {
		return "", "", false
	}
	return parts[2], parts[3], true
}

// decodeFamilyState decodes the payload of a family event by its type
// (the public event contract: proto/token/events/v1).
func decodeFamilyState(typ string, data []byte) (*eventsv1.FamilyState, error) {
	var st *eventsv1.FamilyState
	switch typ {
	case "family.issued":
		var e eventsv1.FamilyIssued
		if err := proto.Unmarshal(data, &e); err != nil {
			return nil, err
		}
		st = e.GetState()
	case "family.rotated":
		var e eventsv1.FamilyRotated
		if err := proto.Unmarshal(data, &e); err != nil {
			return nil, err
		}
		st = e.GetState()
	case "family.revoked":
		var e eventsv1.FamilyRevoked
		if err := proto.Unmarshal(data, &e); err != nil {
			return nil, err
		}
		st = e.GetState()
	default:
		return nil, fmt.Errorf("unknown Token-Event %q", typ)
	}
	if st == nil {
		return nil, fmt.Errorf("%s without state", typ)
	}
	return st, nil
}

// secretHash is the SHA-256 of the secret of refresh token rt
// ("<family id>.<base64url secret>"), as FamilyState.secret_hash holds it.
func secretHash(rt string) ([]byte, error) {
	_, secret, ok := strings.Cut(rt, ".")
	if !ok {
		return nil, fmt.Errorf("refresh token without a dot")
	}
	raw, err := base64.RawURLEncoding.DecodeString(secret)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(raw)
	return h[:], nil
}

// durability is the outcome of checkDurability.
type durability struct {
	Families      int // acknowledged families checked
	Rotations     int // acknowledged rotations checked
	LostResponses int // rotations stored whose response never arrived
	Orphans       int // families stored whose GenerateTokens response never arrived
	// Current lists the families whose last acknowledged refresh token is
	// still the current one; Superseded those with one stored rotation
	// the client never saw.
	Current, Superseded []string
}

// checkDurability asserts that everything acknowledged is in the stream:
// each acknowledged family has exactly one issued event, at least as many
// rotations as were acknowledged and at most one more (each client has one
// call in flight at a time), is active, and its last state's generation
// and secret hashes match the client's last refresh token.
func checkDurability(t *testing.T, acked map[string]ackedFamily, stored map[string]*storedFamily) durability {
	t.Helper()
	var d durability
	for fid, a := range acked {
		d.Families++
		d.Rotations += a.Rotations
		f, ok := stored[fid]
		if !ok {
			t.Errorf("family %s: acknowledged (%d rotations) but not in the stream", fid, a.Rotations)
			continue
		}
		if f.Issued != 1 || f.Events[0] != "issued" {
			t.Errorf("family %s: events %v, want one issued event first", fid, f.Events)
		}
		if f.Revoked != 0 {
			t.Errorf("family %s: revoked (events %v)", fid, f.Events)
		}
		if f.Rotated < a.Rotations || f.Rotated > a.Rotations+1 {
			t.Errorf("family %s: %d rotations stored, %d acknowledged: want %d or %d",
				fid, f.Rotated, a.Rotations, a.Rotations, a.Rotations+1)
		}
		d.LostResponses += max(0, f.Rotated-a.Rotations)
		st := f.State
		if st == nil {
			continue // decoding failed, reported by readFamilies
		}
		if st.GetFamilyId() != fid || st.GetClientId() != a.ClientID {
			t.Errorf("family %s: state of family %q client %q, want client %q", fid, st.GetFamilyId(), st.GetClientId(), a.ClientID)
		}
		if want := uint64(1 + f.Rotated); st.GetGeneration() != want {
			t.Errorf("family %s: generation %d after %d rotations, want %d", fid, st.GetGeneration(), f.Rotated, want)
		}
		if st.GetStatus() != eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE {
			t.Errorf("family %s: status %v, want ACTIVE", fid, st.GetStatus())
		}
		wantType := "family.issued"
		if f.Rotated > 0 {
			wantType = "family.rotated"
		}
		if f.LastType != wantType {
			t.Errorf("family %s: last event type %q, want %q", fid, f.LastType, wantType)
		}
		h, err := secretHash(a.RefreshToken)
		if err != nil {
			t.Errorf("family %s: refresh token: %v", fid, err)
			continue
		}
		switch {
		case f.Rotated == a.Rotations:
			if !bytes.Equal(st.GetSecretHash(), h) {
				t.Errorf("family %s: the last acknowledged refresh token is not the current one", fid)
			}
			d.Current = append(d.Current, fid)
		case f.Rotated == a.Rotations+1:
			if !bytes.Equal(st.GetPreviousSecretHash(), h) {
				t.Errorf("family %s: one unacknowledged rotation, but it did not rotate the last acknowledged token", fid)
			}
			d.Superseded = append(d.Superseded, fid)
		}
	}
	for fid := range stored {
		if _, ok := acked[fid]; !ok {
			d.Orphans++
		}
	}
	sort.Strings(d.Current)
	sort.Strings(d.Superseded)
	return d
}

// forEach runs fn over items on n goroutines and waits.
func forEach[T any](items []T, n int, fn func(T)) {
	ch := make(chan T)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for it := range ch {
				fn(it)
			}
		})
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
}
