package offline

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Layout of a project's log in its storage:
//
//	<project>/<view>/_manifest/<seq>.json
//	<project>/<view>/date=YYYY-MM-DD/<topic>-<partition>-<first>-<last>.arrow

const (
	manifestDirName = "_manifest"
	datePrefix      = "date="
	fileExt         = ".arrow"
	dayMs           = 24 * 60 * 60 * 1000
)

// checkSegment checks a name that becomes one path segment.
func checkSegment(what, s string) error {
	if s == "" || s == "." || s == ".." || len(s) > 249 {
		return fmt.Errorf("%s %q cannot name a directory", what, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("%s %q cannot name a directory: character %q", what, s, c)
		}
	}
	return nil
}

// viewDir is the directory of a view's log.
func viewDir(project, view string) string { return project + "/" + view }

// dayOf returns the UTC day number of an event time in ms (floor division).
func dayOf(ms int64) int64 {
	d := ms / dayMs
	if ms%dayMs < 0 {
		d--
	}
	return d
}

// dateString renders a UTC day number as YYYY-MM-DD.
func dateString(day int64) string {
	return time.UnixMilli(day * dayMs).UTC().Format(time.DateOnly)
}

// fileName is the deterministic name of a file of one partition's events.
func fileName(topic string, partition int32, first, last int64) string {
	return topic + "-" + strconv.FormatInt(int64(partition), 10) + "-" + strconv.FormatInt(first, 10) + "-" + strconv.FormatInt(last, 10) + fileExt
}

// filePath is a file's path relative to its view's directory.
func filePath(day int64, topic string, partition int32, first, last int64) string {
	return datePrefix + dateString(day) + "/" + fileName(topic, partition, first, last)
}

// parseFilePath parses a path made by filePath.
func parseFilePath(p string) (day int64, topic string, partition int32, first, last int64, ok bool) {
	dir, base, found := strings.Cut(p, "/")
	if !found || !strings.HasPrefix(dir, datePrefix) || !strings.HasSuffix(base, fileExt) {
		return 0, "", 0, 0, 0, false
	}
	t, err := time.Parse(time.DateOnly, dir[len(datePrefix):])
	if err != nil {
		return 0, "", 0, 0, 0, false
	}
	day = dayOf(t.UnixMilli())
	rest := base[:len(base)-len(fileExt)]
	var nums [3]int64
	for i := 2; i >= 0; i-- {
		j := strings.LastIndexByte(rest, '-')
		if j < 0 {
			return 0, "", 0, 0, 0, false
		}
		n, err := strconv.ParseInt(rest[j+1:], 10, 64)
		if err != nil || n < 0 || rest[j+1] == '+' {
			return 0, "", 0, 0, 0, false
		}
		nums[i] = n
		rest = rest[:j]
	}
	if nums[0] > 1<<31-1 || checkTopic(rest) != nil {
		return 0, "", 0, 0, 0, false
	}
	// Only the canonical spelling (no leading zeros, same date form) is a name.
	if filePath(day, rest, int32(nums[0]), nums[1], nums[2]) != p {
		return 0, "", 0, 0, 0, false
	}
	return day, rest, int32(nums[0]), nums[1], nums[2], true
}

// checkTopic checks a Kafka topic name, which becomes part of file names.
func checkTopic(t string) error {
	if err := checkSegment("topic", t); err != nil {
		return err
	}
	return nil
}

// manifestEntryName is the name of manifest entry seq within its view.
func manifestEntryName(project, view string, seq int64) string {
	return viewDir(project, view) + "/" + manifestDirName + "/" + fmt.Sprintf("%020d.json", seq)
}

// parseManifestEntry parses the base name of a manifest entry.
func parseManifestEntry(base string) (int64, bool) {
	if len(base) != 25 || !strings.HasSuffix(base, ".json") {
		return 0, false
	}
	n, err := strconv.ParseInt(base[:20], 10, 64)
	if err != nil || n <= 0 || base[0] == '+' || base[0] == '-' {
		return 0, false
	}
	return n, true
}
