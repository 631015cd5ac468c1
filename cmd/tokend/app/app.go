package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/trace"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/rpc/ssf"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// Main is a running tokend.
type Main struct {
	Config Config
	Logger *slog.Logger

	embedded *eventlog.Embedded
	nc       *nats.Conn
	Log      *eventlog.Log
	Set      *projections.Set
	Runner   *projections.Runner
	// Checkpoints, nil with PROJECTION_CHECKPOINT_INTERVAL=0.
	Checkpoints *projections.Checkpoints
	// Projector writes the families read model when this replica holds
	// the pin; Families reads it.
	Projector *projections.FamilyProjector
	Families  *projections.FamilyStore
	Keyring   *keyring.Keyring
	Issuer    *issuer.Issuer
	// Responder carries out key compromises (Keyring and Issuer).
	Responder *keyring.Responder
	DPoP      *dpop.Verifier
	Metrics   *rpc.Metrics
	handler   *rpc.Handler
	server    *http.Server
	listener  net.Listener

	// SSF is the Shared Signals transmitter; nil when off.
	SSF *ssf.Service

	// FeedWriter writes the subscriber feed (every replica runs one; the
	// feed's compare-and-set keeps each message once).
	FeedWriter *projections.FeedWriter

	tracerProvider trace.TracerProvider // nil: tracing off
	stopTracing    func(context.Context) error
	logs           *sdklog.LoggerProvider // LOGGING_SERVICE_ADDRESS; nil: stdout only

	closing atomic.Bool

	group    *group      // the long-lived components, stopped in reverse order (group.go)
	refused  refusedSeqs // forged records, for the rotation checkpoint (logkeys.go)
	feedConn *nats.Conn  // the embedded server's feed account; nil with NATS_URL
	crypto   cryptoParts // KMS_PROVIDER=pkcs11's token, cryptosvc's client
	callers  callers     // caller authentication, TLS, metrics listener (callers.go)
}

// NewLogger returns the JSON (or text) logger of cfg on stderr; records
// logged with a request context carry its trace and correlation IDs
// (WithRequestIDs).
func NewLogger(cfg Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(WithRequestIDs(slog.NewTextHandler(os.Stderr, opts)))
	}
	return slog.New(WithRequestIDs(slog.NewJSONHandler(os.Stderr, opts)))
}

// Start builds every part and starts serving; it returns once the
// projections caught up and a signing key is active, so the service is
// ready. Call Close to stop. Records logger receives with a request
// context carry its trace and correlation IDs (WithRequestIDs); with
// LOGGING_SERVICE_ADDRESS, Main.Logger also sends them there.
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (*Main, error) {
	lp, err := newLoggerProvider(ctx, cfg)
	if err != nil {
		return nil, err
	}
	logger = slog.New(withLogExport(logger.Handler(), lp))
	m := &Main{Config: cfg, Logger: logger, group: newGroup(ctx, logger), logs: lp}
	if err := m.start(ctx); err != nil {
		// Without ctx's deadline: a start that timed out still stops
		// what it started.
		if cerr := m.Close(context.WithoutCancel(ctx)); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close after the failed start: %w", cerr))
		}
		return nil, err
	}
	return m, nil
}

func (m *Main) start(ctx context.Context) error {
	cfg := m.Config
	if err := m.setupCallers(ctx); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("DATA_DIR: %w", err)
	}
	tp, stop, err := newTracerProvider(ctx, cfg)
	if err != nil {
		return err
	}
	m.tracerProvider, m.stopTracing = tp, stop
	if cfg.OTLPEndpoint != "" && cfg.TracerProvider == nil {
		m.Logger.Info("exporting traces with OTLP/HTTP", "endpoint", cfg.OTLPEndpoint, "service_name", cfg.ServiceName)
	}
	if m.logs != nil {
		m.Logger.Info("sending logs with OTLP/gRPC too", "address", cfg.LoggingAddress, "service_name", cfg.ServiceName)
	}
	key, err := m.encryptionKey()
	if err != nil {
		return err
	}
	sealer, err := seal.New(rand.Reader, key, cfg.PreviousKeys...)
	if err != nil {
		return fmt.Errorf("ENCRYPTION_KEY: %w", err)
	}

	if cfg.NATSURL == "" {
		acc, err := m.embeddedAccounts(key)
		if err != nil {
			return err
		}
		m.embedded, err = eventlog.StartEmbedded(eventlog.EmbeddedConfig{
			DataDir: filepath.Join(cfg.DataDir, "jetstream"), Listen: cfg.NATSListen,
			EncryptionKey: key, PreviousEncryptionKey: first(cfg.PreviousKeys), SyncAlways: cfg.NATSSyncAlways, SyncInterval: cfg.NATSSync,
			Accounts: acc,
		})
		if err != nil {
			return err
		}
		m.nc, err = m.embedded.Connect(acc.ServiceOption())
		if err != nil {
			return err
		}
		m.Logger.Info("embedded NATS server started", "subscribers_url", m.embedded.ClientURL(),
			"sync_always", cfg.NATSSyncAlways, "sync_interval", cfg.NATSSync.String())
	} else {
		natsOpts, err := natsOptions(cfg, key)
		if err != nil {
			return err
		}
		if natsOpts, err = m.openServerOptions(natsOpts); err != nil {
			return err
		}
		m.nc, err = nats.Connect(cfg.NATSURL, append(natsOpts, nats.Name("tokend"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { m.Logger.Warn("NATS disconnected", "error", err) }),
			nats.ReconnectHandler(func(nc *nats.Conn) { m.Logger.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }))...)
		if err != nil {
			return fmt.Errorf("NATS_URL: %w", err)
		}
	}

	m.Set = projections.NewSet(cfg.AccessTTL)
	m.Metrics = rpc.NewMetrics(func() float64 {
		if m.Runner == nil {
			return 0
		}
		return float64(m.Runner.Lag())
	})
	logAuth, err := eventlog.NewAuthenticator(key, cfg.PreviousKeys...)
	if err != nil {
		return fmt.Errorf("ENCRYPTION_KEY: %w", err)
	}
	m.Log, err = eventlog.Open(ctx, m.nc, eventlog.Config{
		Stream: cfg.Stream, Prefix: cfg.SubjectPrefix, Replicas: cfg.NATSReplicas, Observer: m.Metrics,
		MaxPayload: 256 << 10, Tracer: tracer(m.tracerProvider, "github.com/auth-platform/tokenservice/eventlog"),
		Auth: logAuth, OnForged: m.forged,
		OnReadError: func(err error) { m.Logger.Warn("reading the event log: recovering", "error", err) },
	})
	if err != nil {
		return err
	}
	if err := m.checkLogClosed(ctx); err != nil {
		return err
	}
	checkpoint, err := m.readRekeyCheckpoint(ctx, logAuth)
	if err != nil {
		return err
	}
	feedJS, err := m.provisionFeed(ctx)
	if err != nil {
		return err
	}
	if err := m.loadCheckpoint(ctx, sealer); err != nil {
		return err
	}
	m.Runner = projections.NewRunner(m.Log, m.Set, func(rec eventlog.Record, err error) {
		m.Metrics.BadRecord("replica")
		m.Logger.Error("skipped a log record the projections cannot decode", "seq", rec.Seq, "subject", rec.Subject, "error", err)
	}, func(err error) {
		m.Logger.Error("projections cannot read the log; retrying", "error", err)
	})
	m.group.Go("projection runner", m.Runner.Run, nil)
	restoreGC := catchUpGC()
	select {
	case <-m.Runner.Ready():
		restoreGC()
	case err := <-m.group.Failed():
		restoreGC()
		return fmt.Errorf("projections did not catch up: %w", err)
	case <-ctx.Done():
		restoreGC()
		return fmt.Errorf("projections did not catch up: %w", ctx.Err())
	}
	if m.Checkpoints != nil {
		m.group.Go("projection checkpoints", m.Checkpoints.Run, nil)
	}
	if len(cfg.PreviousKeys) > 0 {
		if err := m.writeRekeyCheckpoint(ctx, logAuth, checkpoint); err != nil {
			return fmt.Errorf("ENCRYPTION_KEY rotation: %w", err)
		}
	}
	m.FeedWriter = projections.NewFeedWriter(m.Log, feedJS, projections.FeedConfig{
		Stream: m.FeedStream(),
		OnBadRecord: func(rec eventlog.Record, err error) {
			m.Metrics.BadRecord("feed")
			m.Logger.Error("feed writer skipped a record it cannot decode", "seq", rec.Seq, "subject", rec.Subject, "error", err)
		},
		OnError: func(err error) { m.Logger.Warn("feed writer: retrying", "error", err) },
	})
	m.group.Go("feed writer", m.FeedWriter.Run, nil)

	kcfg := keyring.Config{Rand: rand.Reader, Algorithm: cfg.Algorithm,
		Retention: cfg.KeyRetention, Prepublish: cfg.Prepublish, RotationPeriod: cfg.RotationPeriod,
		Fallback: cfg.CryptoFallback, OnError: func(err error) { m.Logger.Error("the log does not record that the fallback key signs", "error", err) },
	}
	if cfg.KMSProvider == "aws" {
		api, err := kmsClient(ctx, cfg, m.Metrics.KMSCall)
		if err != nil {
			return err
		}
		retry := signing.Backoff{Timeout: cfg.CryptoTimeout}
		kcfg.Backend = awskms.Backend{API: api, Backoff: retry}
		if cfg.KMSKeyID != "" {
			kcfg.Backend = awskms.Provisioned{API: api, KeyID: cfg.KMSKeyID, Backoff: retry}
		}
		kcfg.Breaker = m.breakerConfig("", rpc.BreakerSigning, true)
	}
	// KMS_PROVIDER=pkcs11 and cryptosvc, and the crypto service's envelope
	// for sealing (crypto.go).
	if sealer, err = m.setupCrypto(ctx, &kcfg, sealer); err != nil {
		return err
	}
	if cfg.KMSKeyID != "" && cfg.KMSProvider != "aws" {
		// The specification's table pairs KMS_KEY_ID=default-key with
		// its mock provider: a warning, not a refusal.
		m.Logger.Warn("KMS_KEY_ID is not used: it names an AWS KMS key, and KMS_PROVIDER is not aws", "kms_provider", cfg.KMSProvider)
	}
	keyVar := "" // the variable that names a provisioned key, for errors
	if _, ok := kcfg.Backend.(keyring.Provisioner); ok {
		keyVar = "CRYPTO_SIGNING_KEY=" + cfg.CryptoSigningKey
		if cfg.CryptoSigningKeyVersion != 0 {
			keyVar += fmt.Sprintf("/%d", cfg.CryptoSigningKeyVersion)
		}
		if cfg.KMSProvider == "aws" {
			keyVar = "KMS_KEY_ID=" + cfg.KMSKeyID
		}
		m.Logger.Info("signing with a key the operator provisioned: it rotates when the operator supplies the next one (KMS_KEY_ID, CRYPTO_SIGNING_KEY), not on KEY_ROTATION_PERIOD",
			"kms_key_id", cfg.KMSKeyID, "crypto_signing_key", cfg.CryptoSigningKey, "version", cfg.CryptoSigningKeyVersion)
	}
	// The families read model is sealed with the same sealer as the keys
	// (with the crypto service's envelope when it seals).
	if err := m.startFamilies(sealer); err != nil {
		return err
	}
	m.Keyring, err = keyring.New(m.Log, m.Set, m.Runner, sealer, kcfg)
	if err != nil {
		return err
	}
	m.group.Go("keyring fallback recorder", m.Keyring.Run, nil)
	kid, err := m.Keyring.EnsureActive(ctx)
	if err != nil {
		if keyVar != "" {
			return fmt.Errorf("signing key (%s): %w", keyVar, err)
		}
		return fmt.Errorf("signing key: %w", err)
	}
	m.Logger.Info("signing key active", "kid", kid, "algorithm", string(cfg.Algorithm))

	m.Issuer, err = issuer.New(m.Log, m.Keyring, projections.Index{Set: m.Set, Runner: m.Runner}, sealer, issuer.Config{
		Issuer: cfg.Issuer, AccessTTL: cfg.AccessTTL, RefreshTTL: cfg.RefreshTTL, Grace: cfg.Grace, FallbackAccessTTL: cfg.FallbackAccessTTL,
		Retention: cfg.EventRetention, Rand: rand.Reader, Observer: m.Metrics, Tracer: tracer(m.tracerProvider, "github.com/auth-platform/tokenservice/issuer"),
	})
	if err != nil {
		return err
	}
	// A key compromise whose command did not finish (this replica or
	// another crashed part-way) is finished before serving: EnsureActive
	// has done its rotation; Resume revokes the families and resolves it.
	m.Responder = keyring.NewResponder(m.Keyring, m.Issuer)
	if err := m.Responder.Resume(ctx); err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	m.group.Go("key lifecycle", m.runKeyLifecycle, nil)
	if err := m.startSharedSignals(ctx, sealer); err != nil {
		return fmt.Errorf("shared signals: %w", err)
	}
	nonces, err := dpop.NewNonces(key, cfg.DPoPNonceRotation, nil)
	if err != nil {
		return err
	}
	m.DPoP, err = dpop.NewVerifier(dpop.Config{
		Algorithms: cfg.DPoPAlgorithms, Skew: cfg.DPoPSkew, FutureSkew: dpopFutureSkew, JTITTL: cfg.DPoPJTITTL,
		Replay: dpop.LogReplayStore{Log: m.Log}, Nonces: nonces, NonceRequired: cfg.DPoPNonceRequired,
	})
	if err != nil {
		return err
	}
	if len(cfg.DPoPTokenEndpoints) == 0 {
		// RFC 9449 §4.3 check 9 (htu) is then left undone for token
		// requests: a proof made for another server's token endpoint,
		// with the same key, is accepted here.
		m.Logger.Warn("DPOP_TOKEN_ENDPOINTS is not set: DPoP proofs of token requests are accepted for any http_uri; set it to the absolute URIs of your token endpoints so that a proof made for another server is refused")
	}
	m.warnPublicURL(ctx)
	feed := revocationFeed{log: m.Log}
	feed.closing, feed.stop = context.WithCancel(m.group.base)
	m.handler = rpc.New(rpc.Config{SharedSignals: m.sharedSignals(),
		Issuer: m.Issuer, DPoP: m.DPoP, Keys: m.Set, KeyAdmin: m.Keyring, KeyCompromiser: m.Responder, Revocations: m.Set, TokenEndpoints: cfg.DPoPTokenEndpoints, PublicURL: cfg.PublicURL, Projections: m.Set,
		Families: m.Families, Feed: feed, Metrics: m.Metrics, Logger: m.Logger,
		MaxRequestBytes: cfg.MaxRequestBytes, JWKSMaxAge: cfg.JWKSMaxAge, TracerProvider: m.tracerProvider,
		Guard: m.callers.guard, NoMetricsEndpoint: cfg.MetricsAddr != "",
		Ready: func() bool {
			if m.closing.Load() {
				return false
			}
			select {
			case <-m.Runner.Ready():
				return true
			default:
				return false
			}
		},
	})
	m.handler.SetServing(true)

	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	m.listener, err = net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on HOST:PORT %s: %w", addr, err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)                            // with TLS, by ALPN
	protocols.SetUnencryptedHTTP2(m.callers.tls == nil) // h2c: gRPC without TLS, for loopback development
	m.server = &http.Server{
		Handler:           m.handler,
		Protocols:         protocols,
		TLSConfig:         m.callers.tls,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
	serve := m.server.Serve
	if m.callers.tls != nil {
		serve = func(l net.Listener) error { return m.server.ServeTLS(l, "", "") }
	}
	m.group.Go("server", func(context.Context) error { return served(serve(m.listener)) }, func(ctx context.Context) error {
		feed.stop() // streams never go idle: end them, clients resume
		if err := m.server.Shutdown(ctx); err != nil {
			return fmt.Errorf("drain calls: %w", err)
		}
		return nil
	})
	m.Logger.Info("serving", "addr", m.listener.Addr().String(), "issuer", cfg.Issuer, "tls", m.callers.tls != nil, "auth_mode", cfg.AuthMode.String())
	return m.serveMetrics()
}

// CatchUpGCPercent is the GOGC tokend runs with while its projections
// replay the log at start, unless the operator set GOGC. The replay only
// grows the heap, so collecting it at the default pace is wasted work: on
// a million events the default pace replays at 0.63 of the raw consumer
// rate, this one at 0.80 (README, Benchmarks), for a higher peak heap
// during start-up only.
const CatchUpGCPercent = 400

// served is the exit error of an http.Server's Serve: none once Shutdown
// closed it.
func served(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// revocationFeed serves WatchRevocations from the log; its streams end
// when closing does (stop, called as the server stops).
type revocationFeed struct {
	log     *eventlog.Log
	closing context.Context
	stop    context.CancelFunc
}

func (f revocationFeed) WatchRevocations(ctx context.Context, after uint64, subscribed func(), fn func(subscriber.Revocation) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(f.closing, cancel)
	defer stop()
	return projections.RevocationFeed{Log: f.log}.WatchRevocations(ctx, after, subscribed, fn)
}

// Addr returns the address the service listens on.
func (m *Main) Addr() string { return m.listener.Addr().String() }

// SubscriberURL returns the NATS URL subscribers use.
func (m *Main) SubscriberURL() string {
	if m.embedded != nil {
		return m.embedded.ClientURL()
	}
	return m.Config.NATSURL
}

// Err delivers the first component that stopped while the service ran
// (already logged): the caller should Close and exit with a failure.
func (m *Main) Err() <-chan error { return m.group.Failed() }

// Close shuts down in reverse order: stop the components in reverse order
// of start (the listeners first, draining calls in flight, bounded by
// ctx; the projections last), flush the traces (bounded by ctx), flush and
// close NATS, stop the embedded server (which syncs its files), and last
// flush the log records to LOGGING_SERVICE_ADDRESS (bounded by ctx and 5
// s; a failure there is logged, not returned). It returns
// every error of the shutdown, and the exit errors of components that
// failed while stopping (one that failed earlier was delivered by Err).
func (m *Main) Close(ctx context.Context) error {
	var errs []error
	m.closing.Store(true) // /readyz answers 503 from now on
	if m.handler != nil {
		m.handler.SetServing(false)
	}
	if err := m.group.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if m.server == nil && m.listener != nil {
		m.listener.Close() // Start failed between Listen and serving
	}
	if m.feedConn != nil {
		m.feedConn.Close()
	}
	if err := m.crypto.close(); err != nil {
		errs = append(errs, fmt.Errorf("close the HSM: %w", err))
	}
	if m.stopTracing != nil {
		if err := m.stopTracing(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush traces: %w", err))
		}
	}
	if m.nc != nil {
		// Nothing to flush to while the connection is down (its
		// buffered publishes are not acknowledged appends: none is lost).
		if m.nc.IsConnected() {
			if err := m.nc.FlushTimeout(5 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				errs = append(errs, fmt.Errorf("flush NATS: %w", err))
			}
		}
		m.nc.Close()
	}
	if m.embedded != nil {
		m.embedded.Shutdown()
	}
	m.stopLogExport(ctx) // last: the shutdown's own records go too
	return errors.Join(errs...)
}

// keyTick is how often the key lifecycle is moved along; every replica
// does it, and key events are serialized, so they agree.
const keyTick = 10 * time.Second

func first(keys [][]byte) []byte {
	if len(keys) == 0 {
		return nil
	}
	return keys[0]
}
