//go:build !unix

package bench

import "time"

// processCPU is unknown on this platform: the CPU metrics are omitted.
func processCPU() time.Duration { return 0 }
