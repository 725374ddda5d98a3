package registry

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// headlessStore is a store that lost its head but still lists versions,
// as a Redis store whose head key alone was deleted or evicted.
type headlessStore struct{ Store }

func (headlessStore) Head(context.Context) (int64, error) { return 0, nil }

// TestApplyRefusesWhenHeadIsLost: with no head, a plan compares against
// nothing and cannot see a breaking change, so apply refuses unless
// allowed to break when the store shows versions were applied.
func TestApplyRefusesWhenHeadIsLost(t *testing.T) {
	ctx := context.Background()
	fs, err := OpenFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defs := mustLoad(t, breakingBase)
	if _, err := Apply(ctx, fs, defs, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	changed := mustLoad(t, edit(t, "window: 1h}\n  - {name: n_1h", "window: 2h}\n  - {name: n_1h"))
	s := headlessStore{fs}
	res, err := Apply(ctx, s, changed, ApplyOptions{})
	if !errors.Is(err, ErrBreaking) || !strings.Contains(err.Error(), "the store lists registry versions up to 1 but has no head") {
		t.Fatalf("apply without a head: %+v, %v; want ErrBreaking", res, err)
	}
	if res.Plan == nil || len(res.Plan.Changes) == 0 {
		t.Errorf("the refused apply returned no plan")
	}
}
