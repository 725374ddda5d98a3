package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStartTied kills (SIGKILL) a test binary that started a child with
// StartTied, as -timeout would end it, from a goroutine that has ended
// since: the child dies with it.
func TestStartTied(t *testing.T) {
	if os.Getenv("FEATURESTORE_TIED_CHILD") == "1" {
		done := make(chan int)
		go func() {
			cmd := exec.Command("sleep", "60")
			if err := StartTied(cmd); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			done <- cmd.Process.Pid
		}()
		fmt.Println(<-done)
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	parent := exec.Command(os.Args[0], "-test.run=^TestStartTied$")
	parent.Env = append(os.Environ(), "FEATURESTORE_TIED_CHILD=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		_ = parent.Process.Kill()
		_ = parent.Wait()
		t.Fatalf("the binary did not start its child: %q %v", line, err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the child %d is not running: %v", pid, err)
	}
	_ = parent.Process.Kill()
	_ = parent.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// A killed child stays a zombie until init reaps it; its state
		// says so.
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the child %d still runs 10s after the binary that started it died: %s", pid, stat)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
