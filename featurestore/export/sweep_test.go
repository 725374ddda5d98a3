package export

import (
	"slices"
	"testing"
)

// TestSortWithHashCollision checks that keys sharing a hash are still told
// apart: sorted by key, each key's events in order.
func TestSortWithHashCollision(t *testing.T) {
	a, b, c := keyRef{h: 7, s: "a"}, keyRef{h: 7, s: "b"}, keyRef{h: 3, s: "c"}
	evs := []evRef{{key: a, time: 5}, {key: b, time: 1}, {key: a, time: 2}, {key: c, time: 9}, {key: b, time: 4}, {key: a, time: 2, part: 1}}
	sortEvents(evs)
	var got []string
	for _, e := range evs {
		got = append(got, e.key.s+string(rune('0'+e.time))+string(rune('0'+e.part)))
	}
	if want := []string{"c90", "a20", "a21", "a50", "b10", "b40"}; !slices.Equal(got, want) {
		t.Errorf("events sorted as %v, want %v", got, want)
	}
	rows := []rowRef{{key: b, t: 1}, {key: a, t: 3}, {key: b, t: 0}, {key: a, t: 1}}
	sortRows(rows)
	got = got[:0]
	for _, r := range rows {
		got = append(got, r.key.s+string(rune('0'+r.t)))
	}
	if want := []string{"a1", "a3", "b0", "b1"}; !slices.Equal(got, want) {
		t.Errorf("rows sorted as %v, want %v", got, want)
	}
}
