package eventlog

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures an in-process nats-server with JetStream.
type EmbeddedConfig struct {
	// DataDir holds the JetStream files. Required.
	DataDir string
	// Listen is the loopback host:port where subscribers connect. Port 0
	// picks a free port. Default "127.0.0.1:4222".
	Listen string
	// EncryptionKey, if set, encrypts the files at rest (AES-GCM); the
	// server key is derived from it, so the same key must be given at
	// every start.
	EncryptionKey []byte
	// PreviousEncryptionKey, if set, is the key the files were encrypted
	// with before EncryptionKey replaced it; the server re-encrypts the
	// streams' files. It cannot re-encrypt a consumer's (nats-server
	// 2.15 opens them with the current key only, and a durable consumer
	// that does not open can never be created again, error 10012), so
	// the consumers are removed before the server starts: their owners
	// create them again and start over (the families projector rewrites
	// its idempotent model, a subscriber resumes from its own position).
	PreviousEncryptionKey []byte
	// SyncAlways syncs every write to disk before acknowledging it.
	SyncAlways bool
	// SyncInterval is the interval of background syncs when SyncAlways is
	// off. Default 2 minutes (the server's default).
	SyncInterval time.Duration
	// ServerName names the server; default derived by the server.
	ServerName string
	// Cluster, if set, makes the server one node of a JetStream cluster.
	Cluster *ClusterConfig
	// Logs, if true, lets the server log to stderr.
	Logs bool
	// Accounts, if set, makes every client authenticate and separates the
	// log from subscribers (see Accounts); the service then connects with
	// Connect(Accounts.ServiceOption()). Default: no authentication.
	Accounts *Accounts
}

// ClusterConfig configures the clustering of an embedded server.
type ClusterConfig struct {
	Name   string   // cluster name, the same on every node
	Listen string   // host:port for routes
	Routes []string // nats-route://host:port of every node (may include this one)
}

// Embedded is a running in-process nats-server.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a server and waits until it accepts connections.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("eventlog: embedded server needs a data directory")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4222"
	}
	host, port, err := splitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("eventlog: listen address %q: %w", cfg.Listen, err)
	}
	if len(cfg.PreviousEncryptionKey) > 0 {
		if err := removeConsumers(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("eventlog: consumers under the previous key: %w", err)
		}
	}
	opts := &server.Options{
		ServerName:   cfg.ServerName,
		Host:         host,
		Port:         port,
		JetStream:    true,
		StoreDir:     cfg.DataDir,
		SyncAlways:   cfg.SyncAlways,
		SyncInterval: cfg.SyncInterval,
		NoSigs:       true,
		NoLog:        !cfg.Logs,
		MaxPayload:   1 << 20,
	}
	if cfg.Accounts != nil {
		if err := cfg.Accounts.configure(opts); err != nil {
			return nil, fmt.Errorf("eventlog: embedded server accounts: %w", err)
		}
	}
	if len(cfg.EncryptionKey) > 0 {
		opts.JetStreamKey = jetStreamKey(cfg.EncryptionKey)
		opts.JetStreamCipher = server.AES
		if len(cfg.PreviousEncryptionKey) > 0 {
			opts.JetStreamOldKey = jetStreamKey(cfg.PreviousEncryptionKey)
		}
	}
	if c := cfg.Cluster; c != nil {
		ch, cp, err := splitHostPort(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("eventlog: cluster address %q: %w", c.Listen, err)
		}
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: ch, Port: cp}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("eventlog: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("eventlog: embedded server: %w", err)
	}
	if cfg.Logs {
		srv.ConfigureLogger()
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("eventlog: embedded server did not start within 10s")
	}
	if cfg.Accounts != nil {
		if err := cfg.Accounts.enableJetStream(srv); err != nil {
			srv.Shutdown()
			return nil, fmt.Errorf("eventlog: embedded server accounts: %w", err)
		}
	}
	return &Embedded{srv: srv}, nil
}

// Connect returns an in-process connection to the server (no socket).
func (e *Embedded) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(e.srv), nats.Name("tokend"), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("eventlog: in-process connection: %w", err)
	}
	return nc, nil
}

// ClientURL returns the URL subscribers connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server returns the underlying server (tests kill and inspect it).
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server; it syncs and closes its files.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

func splitHostPort(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return h, port, nil
}

// jetStreamKey derives the server's at-rest key from the service key, so
// the configured key is never used for more than one purpose.
func jetStreamKey(k []byte) string {
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte("tokenservice nats jetstream at-rest key v1"))
	return hex.EncodeToString(mac.Sum(nil))
}

// removeConsumers removes the consumers' files of every stream under the
// JetStream store dir (<dir>/jetstream/<account>/streams/<stream>/obs).
func removeConsumers(dir string) error {
	streams, err := filepath.Glob(filepath.Join(dir, "jetstream", "*", "streams", "*", "obs"))
	if err != nil {
		return err
	}
	for _, obs := range streams {
		if err := os.RemoveAll(obs); err != nil {
			return err
		}
	}
	return nil
}
