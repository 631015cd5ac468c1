package eventlog_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
)

// TestProvision: a request that gets no answer (as while a cluster elects
// its meta leader) is cut at the attempt's bound and tried again; when ctx
// ends first, the error says so and names the last attempt's.
func TestProvision(t *testing.T) {
	calls := 0
	start := time.Now()
	err := eventlog.Provision(context.Background(), 50*time.Millisecond, func(ctx context.Context) error {
		calls++
		if calls < 3 {
			<-ctx.Done() // no answer
			return ctx.Err()
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("err %v after %d calls, want success at the third", err, calls)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = eventlog.Provision(ctx, 50*time.Millisecond, func(context.Context) error { return errors.New("no meta leader") })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no meta leader") {
		t.Fatalf("got %v, want the context's error naming the last attempt's", err)
	}
}
