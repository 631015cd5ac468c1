// Package kmstest runs the local-kms emulator (github.com/nsmithuk/local-kms)
// in the test process, on a loopback port, and returns a real AWS SDK KMS
// client for it. The emulator implements the KMS wire protocol with real
// keys; nothing is faked on the client side.
package kmstest

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	lkms "github.com/nsmithuk/local-kms/src"
	"github.com/nsmithuk/local-kms/src/config"
	"github.com/nsmithuk/local-kms/src/data"
	"github.com/sirupsen/logrus"
)

// Emulator is a running local-kms.
type Emulator struct {
	URL    string
	Client *kms.Client
	addr   string
	db     *data.Database
	mu     sync.Mutex
	srv    *http.Server
}

// The emulator keeps its settings in package variables: set them once.
var once sync.Once

// Start runs an emulator until t ends. Its data lives in t.TempDir().
func Start(t testing.TB) *Emulator {
	t.Helper()
	once.Do(func() {
		config.AWSRegion = "us-east-1"
		config.AWSAccountId = "111122223333"
		logrus.SetLevel(logrus.WarnLevel)
	})
	db := data.NewDatabase(t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &Emulator{URL: "http://" + ln.Addr().String(), addr: ln.Addr().String(), db: db}
	e.serve(ln)
	e.Client = kms.New(kms.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(e.URL),
		Credentials:      aws.AnonymousCredentials{},
		RetryMaxAttempts: 1,
	})
	t.Cleanup(func() { e.Stop(); db.Close() })
	return e
}

func (e *Emulator) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { lkms.HandleRequest(w, r, e.db) })}
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// Stop shuts the emulator down (a fault test stops it under load); its
// keys stay for Restart.
func (e *Emulator) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		_ = e.srv.Close()
		e.srv = nil
	}
}

// Restart serves again on the same address with the same keys.
func (e *Emulator) Restart(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	e.serve(ln)
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
