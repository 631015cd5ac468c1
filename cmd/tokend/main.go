// Command tokend is the token service: it issues and rotates OAuth tokens,
// event-sourced on NATS JetStream, and serves them over Connect, gRPC and
// gRPC-Web. Configuration comes from the environment (see README.md).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
)

func main() {
	cfg, err := app.ConfigFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tokend: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}
	logger := app.NewLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP reloads the caller policy and the TLS certificate (both are
	// also reloaded when their files change); one during start-up waits.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	m, err := app.Start(startCtx, cfg, logger)
	cancel()
	if err != nil {
		logger.Error("start failed", "error", err)
		os.Exit(1)
	}
	// From here on, records also go to LOGGING_SERVICE_ADDRESS when set.
	logger = m.Logger
	failed, running := false, true
	for running {
		select {
		case <-hup:
			if err := m.Reload(); err != nil {
				logger.Error("reload on SIGHUP: what did not load stays as it was", "error", err)
			} else {
				logger.Info("reloaded the caller policy and the TLS certificate on SIGHUP")
			}
		case <-ctx.Done():
			running = false
			logger.Info("shutting down: draining calls in flight", "timeout", cfg.ShutdownTimeout.String())
		case <-m.Err(): // the failed component is logged by app
			running, failed = false, true // a supervisor must see it and restart us
			logger.Error("shutting down after a component failed")
		}
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := m.Close(closeCtx); err != nil {
		logger.Error("shutdown", "error", err)
		os.Exit(1)
	}
	if failed {
		os.Exit(1)
	}
	logger.Info("stopped")
}
