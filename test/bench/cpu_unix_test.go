//go:build unix

package bench

import (
	"syscall"
	"time"
)

// processCPU returns the user+system CPU time this process has used so
// far, or 0 if it is unknown.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
