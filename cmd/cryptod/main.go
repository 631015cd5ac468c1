// Command cryptod is the reference crypto service: it serves crypto.v1
// (proto/crypto/v1) over TLS with keys held on a PKCS#11 token, for
// platforms without a central crypto service of their own. Configuration
// comes from the environment (see README.md, "HSM and crypto service").
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/auth-platform/tokenservice/cmd/cryptod/app"
)

func main() {
	cfg, err := app.ConfigFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cryptod: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}
	logger := app.NewLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	m, err := app.Start(startCtx, cfg, logger)
	cancel()
	if err != nil {
		logger.Error("start failed", "error", err)
		os.Exit(1)
	}
	failed := false
	select {
	case <-ctx.Done():
		logger.Info("shutting down: draining calls in flight", "timeout", cfg.ShutdownTimeout.String())
	case err := <-m.Err():
		failed = true
		logger.Error("server failed", "error", err)
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
