package registry

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Day is 24 hours; definitions may write durations in days ("30d").
const Day = 24 * time.Hour

// Duration is a length of time written like "90s", "10m", "1h30m" or "30d".
type Duration time.Duration

// ParseDuration parses a duration of whole units: d (24h), h, m, s and ms.
// A plain number without unit is rejected, so that "60" cannot mean seconds in
// one place and minutes in another.
func ParseDuration(s string) (Duration, error) {
	orig := s
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if s == "0" {
		return 0, nil
	}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("invalid duration %q: expected a number followed by a unit (ms, s, m, h, d)", orig)
		}
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: %w", orig, err)
		}
		s = s[i:]
		j := 0
		for j < len(s) && (s[j] < '0' || s[j] > '9') {
			j++
		}
		var unit time.Duration
		switch s[:j] {
		case "d":
			unit = Day
		case "h":
			unit = time.Hour
		case "m":
			unit = time.Minute
		case "s":
			unit = time.Second
		case "ms":
			unit = time.Millisecond
		case "":
			return 0, fmt.Errorf("invalid duration %q: missing unit (ms, s, m, h, d)", orig)
		default:
			return 0, fmt.Errorf("invalid duration %q: unknown unit %q (use ms, s, m, h, d)", orig, s[:j])
		}
		if n > int64((1<<63-1)/unit) || total+time.Duration(n)*unit < total {
			return 0, fmt.Errorf("invalid duration %q: too long", orig)
		}
		total += time.Duration(n) * unit
		s = s[j:]
	}
	return Duration(total), nil
}

// String renders the duration in the largest exact units, like "1d", "1h30m".
func (d Duration) String() string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	rest := time.Duration(d)
	if rest < 0 {
		b.WriteByte('-')
		rest = -rest
	}
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{Day, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}} {
		if n := rest / u.unit; n > 0 {
			b.WriteString(strconv.FormatInt(int64(n), 10))
			b.WriteString(u.name)
			rest -= n * u.unit
		}
	}
	if rest > 0 {
		b.WriteString(rest.String())
	}
	return b.String()
}

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// MarshalText renders the canonical form.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses the canonical form.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Window is the extent of an aggregation: a sliding window of a fixed length,
// or the whole lifetime of the entity.
type Window struct {
	// Length of the sliding window; zero with Lifetime set.
	Length   Duration
	Lifetime bool
}

// String renders "lifetime" or the window length.
func (w Window) String() string {
	if w.Lifetime {
		return "lifetime"
	}
	return w.Length.String()
}

// IsZero reports whether no window was given.
func (w Window) IsZero() bool { return !w.Lifetime && w.Length == 0 }

// MarshalText renders the canonical form.
func (w Window) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

// UnmarshalText parses "lifetime" or a duration.
func (w *Window) UnmarshalText(b []byte) error {
	if string(b) == "lifetime" {
		*w = Window{Lifetime: true}
		return nil
	}
	d, err := ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%w, or \"lifetime\"", err)
	}
	*w = Window{Length: d}
	return nil
}
