package reload

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// parseWord parses a file holding one word; "bad" does not parse, and
// "later" parses later (ErrNotYet).
func parseWord(data [][]byte) (*string, error) {
	w := strings.TrimSpace(string(data[0]))
	switch w {
	case "bad":
		return nil, errors.New("bad word")
	case "later":
		return nil, fmt.Errorf("not yet: %w", ErrNotYet)
	}
	return &w, nil
}

type calls struct {
	mu   sync.Mutex
	errs []string
	vals []string
}

func (c *calls) reloaded(v *string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errs = append(c.errs, err.Error())
		return
	}
	c.vals = append(c.vals, *v)
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// settle waits for v to be want, or fails after 5 s.
func settle(t *testing.T, v *Value[string], want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for *v.Get() != want {
		if time.Now().After(deadline) {
			t.Fatalf("value %q, want %q", *v.Get(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stays checks that v is still want after several looks at its changed
// files, what saying what they hold.
func stays(t *testing.T, v *Value[string], want, what string) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	for range 5 {
		v.Get()
		time.Sleep(3 * time.Millisecond)
	}
	if *v.Get() != want {
		t.Errorf("%s was put in force: %q", what, *v.Get())
	}
}

// TestValue: a changed file is parsed again once its content settles;
// content that does not parse leaves the value and is reported once;
// content that parses later is tried at every look; a missing file at
// start is an error.
func TestValue(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "word")
	if _, err := New([]string{path}, time.Millisecond, parseWord, nil); err == nil {
		t.Fatal("a missing file: no error")
	}
	write(t, path, "bad")
	if _, err := New([]string{path}, time.Millisecond, parseWord, nil); err == nil || !strings.Contains(err.Error(), "bad word") {
		t.Fatalf("a file that does not parse: %v", err)
	}
	write(t, path, "one")
	var c calls
	v, err := New([]string{path}, 2*time.Millisecond, parseWord, c.reloaded)
	if err != nil {
		t.Fatal(err)
	}
	if *v.Get() != "one" || *v.Current() != "one" {
		t.Fatalf("value %q", *v.Get())
	}
	write(t, path, "two")
	if *v.Current() != "one" {
		t.Error("Current looked at the files")
	}
	settle(t, v, "two")

	write(t, path, "bad")
	stays(t, v, "two", "content that does not parse")
	write(t, path, "three")
	settle(t, v, "three")

	write(t, path, "later")
	stays(t, v, "three", "content not usable yet")
	os.Remove(path)
	time.Sleep(10 * time.Millisecond)
	v.Get()
	if *v.Get() != "three" {
		t.Errorf("a removed file changed the value: %q", *v.Get())
	}
	write(t, path, "four")
	settle(t, v, "four")

	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.Join(c.vals, ",") != "two,three,four" {
		t.Errorf("reloaded values %q", c.vals)
	}
	// One report each: the bad word, the content not usable yet, the
	// missing file.
	if len(c.errs) != 3 || !strings.Contains(c.errs[0], "bad word") || !strings.Contains(c.errs[1], "not yet") || !strings.Contains(c.errs[2], "no such file") {
		t.Errorf("reloaded errors %q", c.errs)
	}
}
