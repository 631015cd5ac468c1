package cryptosvc_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/cmd/cryptod/cryptodtest"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/cryptosvc"
)

// counter counts the requests the client sends, by crypto.v1 method;
// every attempt is one (gRPC over HTTP/2 multiplexes them on one
// connection, so a proxy in front of cryptod would count connections).
type counter struct {
	hc   *http.Client
	mu   sync.Mutex
	seen map[string]int
}

func (c *counter) Do(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.seen[path.Base(r.URL.Path)]++
	c.mu.Unlock()
	return c.hc.Do(r)
}

func (c *counter) received() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.seen)
}

// countedClient returns a client of the service at url that counts its
// requests.
func countedClient(t *testing.T, f *cryptodtest.Fixture, url string, b signing.Backoff) (*cryptosvc.Client, *counter) {
	t.Helper()
	cnt := &counter{hc: f.HTTPClient(t, f.ClientCert, f.ClientKey), seen: map[string]int{}}
	c, err := cryptosvc.New(cryptosvc.Config{Address: url, HTTPClient: cnt, Namespace: cryptodtest.Namespace, Backoff: b})
	if err != nil {
		t.Fatal(err)
	}
	return c, cnt
}

func waitFor(t *testing.T, c *counter, method string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for c.received()[method] < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d requests, want %d", method, c.received()[method], n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRetryOutage: cryptod stops and comes back on the same token while
// GetPublicKey and a CreateKey by intent are retrying; both succeed after
// failed attempts, and the intent has one key.
func TestRetryOutage(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	c, cnt := countedClient(t, f, srv.URL, signing.Backoff{})
	b := cryptosvc.Backend{Client: c}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key, err := b.Create(ctx, signing.ES256, "before-the-outage")
	if err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	opened := make(chan error, 1)
	go func() {
		_, err := b.Open(ctx, key)
		opened <- err
	}()
	waitFor(t, cnt, "GetPublicKey", 3) // the Create's, then two attempts that met the outage
	srv = srv.Restart(t)
	if err := <-opened; err != nil {
		t.Fatalf("GetPublicKey across a short outage: %v", err)
	}
	if n := cnt.received()["GetPublicKey"]; n < 4 {
		t.Fatalf("GetPublicKey sent %d times, want the Create's, the failed attempts and the one that succeeded", n)
	}

	objects := f.Token.Objects(t)
	srv.Stop()
	created := make(chan error, 1)
	go func() {
		_, err := b.Create(ctx, signing.ES256, "during-the-outage")
		created <- err
	}()
	waitFor(t, cnt, "CreateKey", 3)
	srv.Restart(t)
	if err := <-created; err != nil {
		t.Fatalf("CreateKey by intent across a short outage: %v", err)
	}
	if got := f.Token.Objects(t); got != objects+2 { // one key pair
		t.Fatalf("%d objects on the token, want %d", got, objects+2)
	}
}

// TestRetryPermanent: an error the service will answer again is not
// retried.
func TestRetryPermanent(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	c, cnt := countedClient(t, f, srv.URL, signing.Backoff{})
	ctx := context.Background()
	if _, err := c.Signer(ctx, cryptosvc.Ref{Namespace: cryptodtest.Namespace, Name: "no-such-key", Version: 1}, signing.ES256); !errors.Is(err, cryptosvc.ErrKeyNotFound) {
		t.Fatalf("no such key: %v", err)
	}
	if n := cnt.received()["GetPublicKey"]; n != 1 {
		t.Fatalf("GetPublicKey sent %d times for a key that does not exist, want 1", n)
	}
	other, err := cryptosvc.New(cryptosvc.Config{Address: srv.URL, HTTPClient: cnt, Namespace: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (cryptosvc.Backend{Client: other}).Create(ctx, signing.ES256, "denied"); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("another namespace: %v", err)
	}
	if n := cnt.received()["CreateKey"]; n != 1 {
		t.Fatalf("CreateKey sent %d times when permission is denied, want 1", n)
	}
}

// TestRetryDeadline: with cryptod down, the retries end at the caller's
// deadline, or at Backoff.Timeout for a caller without one, with the
// service's last error rather than the context's.
func TestRetryDeadline(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	ref := cryptosvc.Ref{Namespace: cryptodtest.Namespace, Name: "k", Version: 1}
	srv.Stop()
	for _, tc := range []struct {
		name    string
		timeout time.Duration // the caller's; 0: none
		backoff time.Duration
	}{
		{"caller's deadline", 400 * time.Millisecond, time.Hour},
		{"Backoff.Timeout", 0, 400 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, cnt := countedClient(t, f, srv.URL, signing.Backoff{Timeout: tc.backoff})
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			start := time.Now()
			_, err := c.Signer(ctx, ref, signing.ES256)
			elapsed := time.Since(start)
			if !cryptosvc.Transient(err) || !strings.Contains(err.Error(), "attempts)") {
				t.Fatalf("error %v, want the service's last transient error after several attempts", err)
			}
			// Waits of at least 25, 50, 100 and 200 ms: at most 5 attempts fit in 400 ms.
			if n := cnt.received()["GetPublicKey"]; n < 2 || n > 5 {
				t.Fatalf("%d attempts in 400 ms, want 2 to 5", n)
			}
			if elapsed > 400*time.Millisecond+time.Second {
				t.Fatalf("returned after %v: the retries outlived the 400 ms bound", elapsed)
			}
		})
	}
}

func TestTransient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code connect.Code
		want bool
	}{
		{connect.CodeUnavailable, true},
		{connect.CodeResourceExhausted, true},
		{connect.CodeNotFound, false},
		{connect.CodeInvalidArgument, false},
		{connect.CodeAlreadyExists, false},
		{connect.CodeFailedPrecondition, false},
		{connect.CodeUnauthenticated, false},
		{connect.CodePermissionDenied, false},
		{connect.CodeDeadlineExceeded, false},
		{connect.CodeCanceled, false},
	} {
		err := fmt.Errorf("cryptosvc: op: %w", connect.NewError(tc.code, errors.New("m")))
		if got := cryptosvc.Transient(err); got != tc.want {
			t.Errorf("%v: transient %v, want %v", tc.code, got, tc.want)
		}
	}
	// connect-go reports a reset connection as canceled; the caller's
	// cancellation is canceled too, and is not retried.
	reset := connect.NewError(connect.CodeCanceled, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)})
	if !cryptosvc.Transient(fmt.Errorf("op: %w", reset)) {
		t.Error("a reset connection is not transient")
	}
	if cryptosvc.Transient(connect.NewError(connect.CodeCanceled, context.Canceled)) {
		t.Error("the caller's cancellation is transient")
	}
}
