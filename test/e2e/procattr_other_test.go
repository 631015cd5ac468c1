//go:build !linux

package e2e

import "os/exec"

// dieWithParent has no portable equivalent outside Linux; the t.Cleanup of
// startChild still stops the child on every ordinary test end.
func dieWithParent(*exec.Cmd) {}
