package rpc

import "testing"

// TestWatcherCounts: a caller gets at most max streams; releasing one
// frees a slot, and callers do not share slots.
func TestWatcherCounts(t *testing.T) {
	w := &watcherCounts{max: 2, count: map[string]int{}}
	if !w.acquire("a") || !w.acquire("a") {
		t.Fatal("a caller could not open its first two streams")
	}
	if w.acquire("a") {
		t.Fatal("a third stream of the same caller was allowed")
	}
	if !w.acquire("b") {
		t.Fatal("another caller was refused because of the first")
	}
	w.release("a")
	if !w.acquire("a") {
		t.Fatal("a released slot was not reusable")
	}
	w.release("a")
	w.release("a")
	w.release("b")
	if len(w.count) != 0 {
		t.Fatalf("counts left after every release: %v", w.count)
	}
}
