package app

import (
	"context"
	"net/http"

	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/ssf"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// startSharedSignals starts the Shared Signals transmitter (package ssf)
// when SSF_ENABLED. Its issuer (the SETs' iss) is PUBLIC_BASE_URL; unset,
// each stream records the loopback origin its receiver called, as the
// OAuth metadata does, and requests addressed to other names get none.
// Every replica runs it; m.SSF stays nil otherwise.
func (m *Main) startSharedSignals(ctx context.Context, sealer *seal.Sealer) error {
	cfg := m.Config
	if !cfg.SSFEnabled {
		return nil
	}
	issuer, _ := cfg.PublicURL.Base(nil) // "" when not configured
	var schemes []string
	if cfg.AuthMode.APIKey || cfg.AuthMode.None() {
		schemes = append(schemes, ssf.SchemeBearer)
	}
	if cfg.AuthMode.MTLS {
		schemes = append(schemes, ssf.SchemeMTLS)
	}
	var err error
	m.SSF, err = ssf.New(ctx, ssf.Config{
		Log: m.Log, Keys: m.Keyring, Published: m.Set, Sealer: sealer, Issuer: issuer, TokenIssuer: cfg.Issuer, BaseURL: cfg.PublicURL.Base,
		Retention: cfg.SSFRetention, MaxStreams: cfg.SSFMaxStreams, MaxPendingPerStream: cfg.SSFStreamMaxPending, PushTimeout: cfg.SSFPushTimeout, PushMaxBackoff: cfg.SSFPushMaxBackoff,
		PushURLs:             pushURLPolicy(ctx, cfg),
		AuthorizationSchemes: schemes, Registerer: m.Metrics.Registry, Logger: m.Logger,
	})
	if err != nil {
		return err
	}
	m.group.Go("shared signals", m.SSF.Run, nil)
	if issuer != "" {
		m.Logger.Info("Shared Signals transmitter", "metadata", issuer+ssf.PathMetadata)
	}
	return nil
}

// pushURLPolicy is the one rule of where pushes may go: private and
// link-local receivers with SSF_PUSH_ALLOW_PRIVATE; loopback ones with it
// too, or when tokend itself listens on loopback (HOST: development and
// tests, where receivers run beside it). A tokend that serves the network
// never pushes to its own host, so a receiver cannot aim it at a local
// port.
func pushURLPolicy(ctx context.Context, cfg Config) ssf.PushURLPolicy {
	return ssf.PushURLPolicy{AllowPrivate: cfg.SSFPushAllowPrivate,
		AllowLoopback: cfg.SSFPushAllowPrivate || auth.IsLoopback(ctx, nil, cfg.Host)}
}

// sharedSignals is what the handler serves of the transmitter: nothing
// (a nil interface, not a nil *ssf.Service) when it is off.
func (m *Main) sharedSignals() interface{ Register(*http.ServeMux) } {
	if m.SSF == nil {
		return nil
	}
	return m.SSF
}
