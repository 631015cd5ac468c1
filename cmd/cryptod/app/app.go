package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/cmd/cryptod/keystore"
	"github.com/auth-platform/tokenservice/proto/crypto/v1/cryptov1connect"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/signing/pkcs11"
)

// Main is a running cryptod.
type Main struct {
	Config Config
	Logger *slog.Logger

	backend  *pkcs11.Backend
	Store    *keystore.Store
	server   *http.Server
	listener net.Listener
	serveErr chan error

	stopWatch context.CancelFunc // stops the certificate watch
	watchDone chan struct{}
}

// NewLogger returns the JSON (or text) logger of cfg on stderr.
func NewLogger(cfg Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// Start opens the token, loads the policy and the certificates, and
// serves until Close. It refuses to start when no caller could
// authenticate: a policy with API keys, or a client CA for mTLS, is
// required.
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (*Main, error) {
	m := &Main{Config: cfg, Logger: logger, serveErr: make(chan error, 1)}
	if err := m.start(ctx); err != nil {
		_ = m.Close(context.Background()) // the start error is the one to report
		return nil, err
	}
	return m, nil
}

func (m *Main) start(ctx context.Context) error {
	cfg := m.Config
	onError := func(err error) { m.Logger.Error("reloading a file failed; keeping the last good one", "error", err) }
	policy, err := newReloaded(func() (*Policy, error) { return LoadPolicy(cfg.PolicyFile) }, onError, cfg.PolicyFile)
	if err != nil {
		return err
	}
	// TLS as tokend serves it (rpc/auth): the certificate is reloaded when
	// its files change.
	certs, err := auth.NewCertReloader(cfg.TLSCertFile, cfg.TLSKeyFile, m.Logger)
	if err != nil {
		return fmt.Errorf("CRYPTOD_TLS_CERT_FILE: %w", err)
	}
	var clientCAs *x509.CertPool
	if cfg.ClientCAFile != "" {
		if clientCAs, err = auth.LoadCertPool(cfg.ClientCAFile); err != nil {
			return fmt.Errorf("CRYPTOD_TLS_CLIENT_CA_FILE: %w", err)
		}
	} else if !policy.get().hasAPIKeys() {
		return errors.New("CRYPTOD_POLICY_FILE lists no API key and CRYPTOD_TLS_CLIENT_CA_FILE is unset: no caller could authenticate")
	}
	// Without API keys in the policy, a caller without a certificate is
	// refused at the handshake.
	tlsCfg := auth.ServerTLSConfig(certs, clientCAs, clientCAs != nil && !policy.get().hasAPIKeys())
	watchCtx, stopWatch := context.WithCancel(context.Background())
	m.stopWatch, m.watchDone = stopWatch, make(chan struct{})
	go func() {
		defer close(m.watchDone)
		_ = certs.Watch(watchCtx, time.Second) // ends with watchCtx
	}()

	m.backend, err = pkcs11.New(ctx, cfg.PKCS11)
	if err != nil {
		return err
	}
	m.Store, err = keystore.Open(ctx, m.backend, rand.Reader)
	if err != nil {
		return err
	}
	m.Logger.Info("token opened", "pkcs11", cfg.PKCS11)

	mux := http.NewServeMux()
	path, h := cryptov1connect.NewCryptoServiceHandler(&service{store: m.Store, logger: m.Logger},
		connect.WithReadMaxBytes(64<<10),
		// Messages are a few hundred bytes: gzip would cost more than it
		// saves (a third of the CPU of a call when it was on).
		connect.WithCompressMinBytes(4<<10))
	mux.Handle(path, authMiddleware(policy.get, h))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

	m.listener, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on CRYPTOD_LISTEN %s: %w", cfg.Listen, err)
	}
	m.server = &http.Server{
		Handler:           mux,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
	ln := tls.NewListener(m.listener, tlsCfg)
	go func() {
		if err := m.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.serveErr <- err
		}
	}()
	m.Logger.Info("serving", "addr", m.listener.Addr().String(), "mtls", cfg.ClientCAFile != "", "api_keys", policy.get().hasAPIKeys())
	return nil
}

// Addr returns the address cryptod listens on.
func (m *Main) Addr() string { return m.listener.Addr().String() }

// Err reports a serving failure after Start.
func (m *Main) Err() <-chan error { return m.serveErr }

// Close stops accepting calls, waits for those in flight (bounded by
// ctx), and closes the token.
func (m *Main) Close(ctx context.Context) error {
	var errs []error
	if m.server != nil {
		if err := m.server.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain calls: %w", err))
		}
	} else if m.listener != nil {
		_ = m.listener.Close() // never served
	}
	if m.stopWatch != nil {
		m.stopWatch()
		<-m.watchDone
	}
	if m.backend != nil {
		if err := m.backend.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
