// Command tokenctl is the operator CLI of the token service: it tails,
// audits, exports and replays the event log, talking to NATS directly
// (NATS_URL) and to tokend where it must. Run `tokenctl help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/auth-platform/tokenservice/cmd/tokenctl/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := ctl.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
