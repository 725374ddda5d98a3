//go:build !linux

package testenv

import "os/exec"

// StartTied starts cmd. On Linux the child is also killed when the test
// binary dies; elsewhere a binary killed by -timeout leaves it running.
func StartTied(cmd *exec.Cmd) error { return cmd.Start() }
