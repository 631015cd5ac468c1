package eventlog

import (
	"testing"
	"time"
)

// TestAttemptTimeout: Provision's tries start at firstAttempt and double up
// to the limit; a limit below firstAttempt bounds every try.
func TestAttemptTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		n     int
		limit time.Duration
		want  time.Duration
	}{
		{name: "first", n: 0, limit: 5 * time.Second, want: time.Second},
		{name: "second doubles", n: 1, limit: 5 * time.Second, want: 2 * time.Second},
		{name: "third doubles", n: 2, limit: 5 * time.Second, want: 4 * time.Second},
		{name: "fourth at the limit", n: 3, limit: 5 * time.Second, want: 5 * time.Second},
		{name: "stays at the limit", n: 1000, limit: 5 * time.Second, want: 5 * time.Second},
		{name: "limit below the first", n: 0, limit: 50 * time.Millisecond, want: 50 * time.Millisecond},
		{name: "limit below the first, later", n: 7, limit: 50 * time.Millisecond, want: 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := attemptTimeout(tt.n, tt.limit); got != tt.want {
				t.Fatalf("attemptTimeout(%d, %s) = %s, want %s", tt.n, tt.limit, got, tt.want)
			}
		})
	}
}
