package eventlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
)

// TestFollowReportsReadErrors: a read that loses its server keeps going
// (it recovers by itself) but tells OnReadError, so that its owner can
// count or log what went wrong.
func TestFollowReportsReadErrors(t *testing.T) {
	t.Parallel()
	n := eventlogtest.SingleNode(t)
	readErrs := make(chan error, 16)
	l := eventlogtest.OpenLog(t, n.Conn, eventlog.Config{OnReadError: func(err error) {
		select {
		case readErrs <- err:
		default:
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	caughtUp := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- l.Follow(ctx, 1, nil, func(eventlog.Record) {}, func() { close(caughtUp) }) }()
	select {
	case <-caughtUp:
	case <-time.After(30 * time.Second):
		t.Fatal("Follow did not catch up")
	}
	select {
	case err := <-readErrs:
		t.Fatalf("read error before any failure: %v", err)
	default:
	}
	n.Embedded.Shutdown()
	select {
	case err := <-readErrs:
		t.Logf("reported: %v", err)
	case <-time.After(30 * time.Second):
		t.Error("losing the server reported no read error")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Follow did not return after its context ended")
	}
}
