//go:build unix

package cmd

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestSecondSignalKills runs a child process whose graceful stop, begun by
// a first Ctrl-C, hangs; a second Ctrl-C must kill it rather than be
// swallowed.
func TestSecondSignalKills(t *testing.T) {
	if os.Getenv("FEATURESTORE_SIGNAL_CHILD") == "1" {
		ctx, stop := signalContext()
		defer stop()
		_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
		<-ctx.Done()
		fmt.Println("stopping")
		time.Sleep(10 * time.Second) // a stuck graceful stop
		os.Exit(0)
	}
	child := exec.Command(os.Args[0], "-test.run=^TestSecondSignalKills$")
	child.Env = append(os.Environ(), "FEATURESTORE_SIGNAL_CHILD=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "stopping\n" {
		_ = child.Process.Kill()
		t.Fatalf("child did not begin its stop: %q %v", line, err)
	}
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	// The child stops catching signals just after its context ends; send
	// until it dies, for a while shorter than its stuck stop.
	deadline := time.After(5 * time.Second)
	for {
		_ = child.Process.Signal(syscall.SIGINT)
		select {
		case err := <-done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGINT {
				t.Fatalf("child ended with %v, want killed by SIGINT", err)
			}
			return
		case <-deadline:
			_ = child.Process.Kill()
			<-done
			t.Fatal("a second Ctrl-C did not kill the child whose stop hangs")
		case <-time.After(100 * time.Millisecond):
		}
	}
}
