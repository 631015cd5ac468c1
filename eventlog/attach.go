package eventlog

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Attach returns a Log over an existing stream without creating it or
// changing its configuration: for readers such as operator tools. The
// stream's replica count is read from its configuration. Without
// cfg.Auth its reads are not checked and it cannot append.
func Attach(ctx context.Context, nc *nats.Conn, cfg Config) (*Log, error) {
	cfg.setDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("eventlog: jetstream: %w", err)
	}
	stream, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("eventlog: stream %s: %w", cfg.Stream, err)
	}
	if info := stream.CachedInfo(); info != nil {
		cfg.Replicas = info.Config.Replicas
	}
	return newLog(nc, js, stream, cfg), nil
}
