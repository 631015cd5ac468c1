package rpc_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc"
)

// TestHealthWatchCapped: the public health Watch serves at most
// MaxHealthWatchers streams; more are refused with resource_exhausted
// while Check (what probes call) still answers, and a closed stream frees
// its slot.
func TestHealthWatchCapped(t *testing.T) {
	const max = 3
	s := newServerWith(t, false, func(c *rpc.Config) { c.MaxHealthWatchers = max })
	hc := grpchealth.NewClient(s.http, s.url, connect.WithGRPC())
	req := &grpchealth.CheckRequest{Service: tokenv1connect.TokenServiceName}
	// open starts a Watch and returns its first event.
	open := func(ctx context.Context) grpchealth.WatchEvent {
		select {
		case ev := <-hc.Watch(ctx, req):
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no first event from Watch")
			return grpchealth.WatchEvent{}
		}
	}
	var cancels []context.CancelFunc
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
	})
	for i := range max {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		if ev := open(ctx); ev.Err != nil || ev.Response.Status != grpchealth.StatusServing {
			t.Fatalf("watch %d: %+v", i, ev)
		}
	}
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		ev := open(ctx)
		cancel()
		if connect.CodeOf(ev.Err) != connect.CodeResourceExhausted {
			t.Fatalf("a watch over the cap of %d: %+v, want resource_exhausted", max, ev)
		}
	}
	if res, err := hc.Check(context.Background(), req); err != nil || res.Status != grpchealth.StatusServing {
		t.Fatalf("Check with every watch slot taken: %v %v", res, err)
	}
	cancels[0]()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		ev := open(ctx)
		if ev.Err == nil {
			break
		}
		if connect.CodeOf(ev.Err) != connect.CodeResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("a watch after one was closed: %v", ev.Err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
