package auth

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiters holds one token bucket per caller, at most max of them; the
// least recently used goes first. Callers are authenticated identities,
// whose number the policy bounds, so eviction is rare, and an evicted
// caller merely starts again with a full bucket.
type limiters struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *bucket, most recently used first
	m   map[string]*list.Element
}

type bucket struct {
	key   string
	limit RateLimit
	lim   *rate.Limiter
}

func newLimiters(max int) *limiters {
	return &limiters{max: max, ll: list.New(), m: map[string]*list.Element{}}
}

// allow takes one token from key's bucket at now, creating the bucket, or
// adjusting it to a limit changed by a policy reload.
func (l *limiters) allow(key string, limit RateLimit, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.m[key]; ok {
		l.ll.MoveToFront(el)
		b := el.Value.(*bucket)
		if b.limit != limit {
			b.lim.SetLimitAt(now, rate.Limit(limit.PerSecond))
			b.lim.SetBurstAt(now, limit.Burst)
			b.limit = limit
		}
		return b.lim.AllowN(now, 1)
	}
	if l.ll.Len() >= l.max {
		oldest := l.ll.Back()
		l.ll.Remove(oldest)
		delete(l.m, oldest.Value.(*bucket).key)
	}
	b := &bucket{key: key, limit: limit, lim: rate.NewLimiter(rate.Limit(limit.PerSecond), limit.Burst)}
	l.m[key] = l.ll.PushFront(b)
	return b.lim.AllowN(now, 1)
}

func (l *limiters) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ll.Len()
}
