package app

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// reloaded holds a value loaded from files and loads it again when one
// of them changes (size or modification time), checking at most once per
// second, on use: no goroutine. A load that fails keeps the last good
// value and reports the error once per change through onError. It is
// safe for concurrent use.
//
// It carries cryptod's policy, whose namespaces rpc/auth's policy (roles
// of the token service) has no place for.
type reloaded[T any] struct {
	paths   []string
	load    func() (T, error)
	onError func(error)
	now     func() time.Time

	mu      sync.Mutex
	val     T
	stamp   string
	checked time.Time
}

func newReloaded[T any](load func() (T, error), onError func(error), paths ...string) (*reloaded[T], error) {
	r := &reloaded[T]{paths: paths, load: load, onError: onError, now: time.Now}
	stamp, err := r.stampNow()
	if err != nil {
		return nil, err
	}
	v, err := load()
	if err != nil {
		return nil, err
	}
	r.val, r.stamp, r.checked = v, stamp, r.now()
	return r, nil
}

func (r *reloaded[T]) stampNow() (string, error) {
	var s string
	for _, p := range r.paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}

// get returns the current value, reloading it first if a file changed.
func (r *reloaded[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < time.Second {
		return r.val
	}
	r.checked = now
	stamp, err := r.stampNow()
	if err != nil || stamp == r.stamp {
		return r.val // a file being replaced: keep the last good value
	}
	r.stamp = stamp
	v, err := r.load()
	if err != nil {
		r.onError(err)
		return r.val
	}
	r.val = v
	return v
}
