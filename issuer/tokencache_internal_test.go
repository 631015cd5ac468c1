package issuer

import (
	"crypto/sha256"
	"strconv"
	"testing"
)

// TestVerifiedTokensBound: the cache never holds more than its bound,
// and a token in use (looked up again) stays while others come and go.
func TestVerifiedTokensBound(t *testing.T) {
	t.Parallel()
	c := newVerifiedTokens(100)
	hot := sha256.Sum256([]byte("hot"))
	c.add(hot, &verifiedEntry{kid: "hot"})
	for i := range 10_000 {
		c.add(sha256.Sum256([]byte(strconv.Itoa(i))), &verifiedEntry{})
		if n := c.len(); n > 100 {
			t.Fatalf("%d tokens cached after %d additions, bound 100", n, i+1)
		}
		if i%20 == 0 {
			if e, ok := c.get(hot); !ok || e.kid != "hot" {
				t.Fatalf("the token in use left the cache after %d additions", i+1)
			}
		}
	}
	if newVerifiedTokens(0) != nil || newVerifiedTokens(-1) != nil {
		t.Fatal("a cache with no room")
	}
}
