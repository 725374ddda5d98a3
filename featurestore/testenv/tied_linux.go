package testenv

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// StartTied starts cmd as cmd.Start does, tied to the test binary: the
// kernel kills it (SIGKILL) when the binary dies, also when -timeout or a
// signal ends it before the test's cleanup could. Use it for the servers
// and processes a test starts.
//
// The kernel sends the signal when the thread that started the child
// exits (PR_SET_PDEATHSIG), not the process; so every child is started
// from one goroutine locked to its thread for good, which exits only with
// the binary.
func StartTied(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan error)
	starter() <- startRequest{cmd, done}
	return <-done
}

type startRequest struct {
	cmd  *exec.Cmd
	done chan<- error
}

var starter = sync.OnceValue(func() chan<- startRequest {
	reqs := make(chan startRequest)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the binary
		for r := range reqs {
			r.done <- r.cmd.Start()
		}
	}()
	return reqs
})
