package issuer

import (
	"crypto"
	"crypto/sha256"
	"sync"

	"github.com/auth-platform/tokenservice/signing"
)

// DefaultVerifiedTokens is the default bound of the cache of verified
// access tokens (Config.VerifiedTokens).
const DefaultVerifiedTokens = 4096

// verifiedTokens remembers access tokens whose signature, header and
// form VerifyAccessToken has checked, keyed by the SHA-256 of the token,
// so that a token a resource server presents again costs a map lookup
// instead of a signature verification. It holds only what does not
// change for a given token: the claims it carries and the key that
// verified it. Everything that can change is decided again on every use,
// by the same functions as for a token seen the first time: that the key
// is still in the JWKS (a destroyed or compromised key leaves it), the
// time-dependent claims against the clock (accessParserOptions), and
// revocation, which callers check after VerifyAccessToken
// (AccessTokenRevoked), so a revoked token is refused at once, cached or
// not.
//
// It is bounded by two generations: lookups and additions go to the
// current one; when it holds half the bound it becomes the previous one
// and the older is dropped. A token found in the previous generation moves
// to the current one, so the tokens in use stay. Safe for concurrent use.
type verifiedTokens struct {
	half int

	mu        sync.Mutex
	cur, prev map[[sha256.Size]byte]*verifiedEntry
}

// verifiedEntry is a token verified once: its claims, and the key and
// algorithm that verified it.
type verifiedEntry struct {
	claims accessTokenClaims
	kid    string
	alg    signing.Algorithm
	pub    crypto.PublicKey
}

// newVerifiedTokens returns a cache of at most bound tokens, or nil (no
// cache) if bound is not positive.
func newVerifiedTokens(bound int) *verifiedTokens {
	if bound <= 0 {
		return nil
	}
	half := max(bound/2, 1)
	return &verifiedTokens{half: half, cur: make(map[[sha256.Size]byte]*verifiedEntry, half)}
}

// get returns the entry of the token whose digest is d, if it is cached.
func (c *verifiedTokens) get(d [sha256.Size]byte) (*verifiedEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cur[d]; ok {
		return e, true
	}
	e, ok := c.prev[d]
	if ok {
		c.addLocked(d, e)
	}
	return e, ok
}

// add caches e as the entry of the token whose digest is d.
func (c *verifiedTokens) add(d [sha256.Size]byte, e *verifiedEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addLocked(d, e)
}

func (c *verifiedTokens) addLocked(d [sha256.Size]byte, e *verifiedEntry) {
	if len(c.cur) >= c.half {
		c.prev, c.cur = c.cur, make(map[[sha256.Size]byte]*verifiedEntry, c.half)
	}
	c.cur[d] = e
}

// len returns how many tokens are cached.
func (c *verifiedTokens) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.cur)
	for d := range c.prev {
		if _, dup := c.cur[d]; !dup {
			n++
		}
	}
	return n
}

// sameKey reports whether a and b are the same public key.
func sameKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
