package rpc

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
)

// cappedHealth is the gRPC health checker of the service: Check as
// grpchealth.StaticChecker answers it, and Watch (a stream anyone may open
// without credential) with at most a fixed number of streams at once, so
// that idle streams cannot pile up goroutines. Probes (Kubernetes' grpc
// probe, grpc_health_probe) call Check, which is never limited.
type cappedHealth struct {
	*grpchealth.StaticChecker
	slots chan struct{} // one per open Watch stream
}

var _ grpchealth.Watcher = (*cappedHealth)(nil)

// errHealthWatchers is the refusal of a Watch over the cap.
var errHealthWatchers = errors.New("too many health watchers; call Check instead")

// Watch implements grpchealth.Watcher. It returns a resource_exhausted
// error when MaxHealthWatchers streams are open.
func (c *cappedHealth) Watch(ctx context.Context, req *grpchealth.CheckRequest, onChange func()) (func(), error) {
	select {
	case c.slots <- struct{}{}:
	default:
		return nil, connect.NewError(connect.CodeResourceExhausted, errHealthWatchers)
	}
	stop, err := c.StaticChecker.Watch(ctx, req, onChange)
	if err != nil {
		<-c.slots
		return nil, err
	}
	return func() {
		stop()
		<-c.slots
	}, nil
}
