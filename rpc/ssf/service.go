package ssf

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// Authorization schemes of the metadata (SSF 1.0 §7.1.1).
const (
	SchemeBearer = "urn:ietf:rfc:6750" // API keys as bearer credentials
	SchemeMTLS   = "urn:ietf:rfc:8705" // client certificates
)

// Defaults of Config.
const (
	DefaultBucket   = "SSF_STREAMS"
	DefaultQueue    = "SSF_SETS"
	DefaultConsumer = "ssf_materializer"
)

// Config configures a Service. Every replica must use the same Bucket,
// Queue and Consumer.
type Config struct {
	// Log is the event log the SETs come from. Required.
	Log *eventlog.Log
	// Keys gives the active signing key, which signs every SET. Required.
	Keys SignerSource
	// Published, if set, is the published JWKS: a queued SET whose key
	// left it (a compromised key, a retired one past its retention) is
	// signed again by the active key before it is delivered. Default:
	// SETs are delivered as they were signed.
	Published KeySet
	// Sealer seals the streams (a push authorization header is a secret)
	// and the queued SETs (they name users). Required.
	Sealer *seal.Sealer
	// Issuer is the transmitter's issuer (PUBLIC_BASE_URL): the metadata's
	// issuer and the SETs' iss. "" (in development, on loopback) means
	// the origin a request was addressed to (BaseURL), recorded by each
	// stream when it is created: its receiver gets the iss it discovered.
	Issuer string
	// TokenIssuer is the iss of the iss_sub subject identifiers: the
	// access tokens' issuer, whose sub values they are. Required.
	TokenIssuer string
	// BaseURL returns the base of the absolute URLs the metadata and the
	// streams publish, for a request (rpc.PublicURL.Base). Default: Issuer.
	BaseURL func(*http.Request) (string, bool)
	// AuthorizationSchemes are the spec_urn values of the metadata's
	// authorization_schemes: how receivers authenticate. Default
	// urn:ietf:rfc:6750 (bearer API keys).
	AuthorizationSchemes []string
	// Bucket, Queue and Consumer name the KV bucket of streams, the stream
	// of queued SETs and the log's durable consumer. Defaults above.
	Bucket, Queue, Consumer string
	// Retention bounds how long an undelivered SET is kept (a receiver
	// down longer loses the older ones). Default 7 days.
	Retention time.Duration
	// MaxQueueBytes bounds the queued SETs of all streams; the oldest
	// leave first. Default 1 GiB.
	MaxQueueBytes int64
	// MaxPendingPerStream bounds the SETs queued for one stream: beyond
	// it, the stream's new SETs are dropped (counted in
	// token_service_ssf_dropped_total{reason="stream_backlog"}) until its
	// receiver takes some, so that one receiver cannot push the others'
	// SETs out of the shared queue. Default 100,000.
	MaxPendingPerStream int
	// MaxStreams bounds the streams of one receiver. Default 16.
	MaxStreams int
	// PushTimeout bounds one push, connection to response. Default 10 s.
	PushTimeout time.Duration
	// PushBackoff and PushMaxBackoff shape the retries of a failed push:
	// PushBackoff doubled per attempt, at most PushMaxBackoff. Defaults 1
	// s and 5 min.
	PushBackoff, PushMaxBackoff time.Duration
	// PushURLs says which push URLs and addresses are accepted (https,
	// http to loopback unless DenyHTTPLoopback, private addresses only
	// with AllowPrivate).
	PushURLs PushURLPolicy
	// Client sends the pushes. Default: a client that follows no
	// redirect, uses no proxy, connects only to addresses PushURLs
	// allows (allowedAddr), within PushTimeout.
	Client *http.Client
	// Registerer, if set, receives the metrics (token_service_ssf_*).
	Registerer prometheus.Registerer
	// Logger receives delivery failures. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand makes stream IDs and verification nonces. Default crypto/rand.
	Rand io.Reader
}

// Service is the Shared Signals transmitter: the streams, the SETs made
// from the log, and their delivery. It is safe for concurrent use.
type Service struct {
	cfg     Config
	log     *eventlog.Log
	store   *store
	queue   *queue
	metrics *Metrics
	backlog *backlog
	// pushers holds the push workers this replica runs (push.go).
	pushMu  sync.Mutex
	pushers map[string]*pusher
}

// New returns a Service, with its bucket and queue created (or updated).
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Log == nil || cfg.Keys == nil || cfg.Sealer == nil || cfg.TokenIssuer == "" || (cfg.Issuer == "" && cfg.BaseURL == nil) {
		return nil, errors.New("ssf: Log, Keys, Sealer, TokenIssuer, and Issuer or BaseURL are required")
	}
	if cfg.BaseURL == nil {
		iss := cfg.Issuer
		cfg.BaseURL = func(*http.Request) (string, bool) { return iss, true }
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	if len(cfg.AuthorizationSchemes) == 0 {
		cfg.AuthorizationSchemes = []string{SchemeBearer}
	}
	def(&cfg.Bucket, DefaultBucket)
	def(&cfg.Queue, DefaultQueue)
	def(&cfg.Consumer, DefaultConsumer)
	for _, name := range []string{cfg.Bucket, cfg.Queue, cfg.Consumer} {
		if !eventlog.ValidToken(name) {
			return nil, fmt.Errorf("ssf: %q is not a valid name", name)
		}
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	if cfg.MaxQueueBytes <= 0 {
		cfg.MaxQueueBytes = 1 << 30
	}
	if cfg.MaxPendingPerStream <= 0 {
		cfg.MaxPendingPerStream = 100_000
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 16
	}
	if cfg.PushTimeout <= 0 {
		cfg.PushTimeout = 10 * time.Second
	}
	if cfg.PushBackoff <= 0 {
		cfg.PushBackoff = time.Second
	}
	if cfg.PushMaxBackoff <= 0 {
		cfg.PushMaxBackoff = 5 * time.Minute
	}
	if cfg.Client == nil {
		cfg.Client = cfg.PushURLs.pushClient(cfg.PushTimeout)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	js := cfg.Log.JetStream()
	// Every replica sets these up at start, also while the cluster elects
	// a meta leader (a replica restarted beside a restarted server).
	var st *store
	err := cfg.Log.Provision(ctx, func(ctx context.Context) (err error) {
		st, err = openStore(ctx, js, cfg.Bucket, cfg.Log.Replicas(), cfg.Sealer)
		return err
	})
	if err != nil {
		return nil, err
	}
	var q *queue
	err = cfg.Log.Provision(ctx, func(ctx context.Context) (err error) {
		q, err = openQueue(ctx, js, js.Conn(), cfg.Queue, cfg.Log.Replicas(), cfg.Retention, cfg.MaxQueueBytes, cfg.Sealer)
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: cfg.Log, store: st, queue: q, pushers: map[string]*pusher{},
		backlog: newBacklog(cfg.MaxPendingPerStream, q.count, cfg.Now, cfg.Logger)}
	if err := s.log.Provision(ctx, func(ctx context.Context) error {
		_, err := s.ensureConsumer(ctx)
		return err
	}); err != nil {
		return nil, err
	}
	if cfg.Registerer != nil {
		s.metrics = newMetrics(cfg.Registerer, s)
	}
	return s, nil
}

// Run watches the streams, makes SETs from the log and pushes them until
// ctx ends. Every replica runs it: the log's durable consumer gives each
// record to one of them, each push stream is delivered by one at a time.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{
		func(ctx context.Context) error {
			return s.store.watch(ctx, func(err error) { s.cfg.Logger.Error("ssf: a stream does not open", "error", err) })
		},
		s.materialize,
		s.push,
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				errs <- err
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	cancel()
	wg.Wait()
	return err
}

// newID returns a fresh stream ID: 128 random bits, base64url.
func (s *Service) newID() (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(s.cfg.Rand, b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
