package export

import (
	"bufio"
	stdcsv "encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
)

// csvColumn collects what the values of one CSV column can be parsed as.
type csvColumn struct {
	any                  bool // a non-empty value was seen
	isInt, isFloat       bool
	isBool               bool
	isTimeUS, isTimeNano bool
	zoned, naive         bool // some time has a zone offset; some has none
	// notTime is the first value that is not a time, and its row.
	notTime    string
	notTimeRow int64
	// day is the first time that is a day alone (2026-11-26), which Arrow
	// reads as midnight UTC, and its row.
	day    string
	dayRow int64
	// timestamp marks the entity table's timestamp column; anInt and aTime
	// are its first integer and first time, and their rows: a column of
	// both mixes two kinds of time.
	timestamp          bool
	anInt, aTime       string
	anIntRow, aTimeRow int64
}

// see records value v of row (from 1).
func (c *csvColumn) see(v string, row int64) {
	if v == "" {
		return // null
	}
	if !c.any {
		c.any = true
		c.isInt, c.isFloat, c.isBool, c.isTimeUS, c.isTimeNano = true, true, true, true, true
	}
	if c.isInt || c.isFloat {
		// A number read as int64 or float64 must print back as written, as
		// label columns are carried to the output unchanged: a leading zero
		// (a zip code "00501") would be lost, and so would the digits of an
		// integer beyond int64 if it were read as float64. Such a value
		// makes the column utf8.
		_, err := strconv.ParseInt(v, 10, 64)
		switch {
		case leadingZero(v) || errors.Is(err, strconv.ErrRange):
			c.isInt, c.isFloat = false, false
		case err != nil:
			c.isInt = false
			if c.isFloat {
				_, err := strconv.ParseFloat(v, 64)
				c.isFloat = err == nil
			}
		}
	}
	if c.isBool {
		// Only the spellings the docs name: strconv.ParseBool also takes
		// T, F, 1, 0 and TRUE, which in a label column are codes, not
		// booleans.
		c.isBool = v == "true" || v == "false"
	}
	if c.isTimeUS {
		_, zone, err := arrow.TimestampFromStringInLocation(v, arrow.Microsecond, time.UTC)
		c.isTimeUS = err == nil
		c.zoned, c.naive = c.zoned || (zone && err == nil), c.naive || (!zone && err == nil)
	}
	if c.isTimeNano && !c.isTimeUS {
		_, zone, err := arrow.TimestampFromStringInLocation(v, arrow.Nanosecond, time.UTC)
		c.isTimeNano = err == nil
		c.zoned, c.naive = c.zoned || (zone && err == nil), c.naive || (!zone && err == nil)
	}
	if !c.isTimeUS && !c.isTimeNano && c.notTime == "" {
		c.notTime, c.notTimeRow = v, row
	}
	if c.timestamp && (c.anInt == "" || c.aTime == "") {
		if _, err := strconv.ParseInt(v, 10, 64); err == nil {
			if c.anInt == "" {
				c.anInt, c.anIntRow = v, row
			}
		} else if _, _, err := arrow.TimestampFromStringInLocation(v, arrow.Nanosecond, time.UTC); err == nil && c.aTime == "" {
			c.aTime, c.aTimeRow = v, row
		}
	}
	// A time of 10 characters has no time of day (TimestampFromString
	// takes YYYY-MM-DD and longer forms only).
	if (c.isTimeUS || c.isTimeNano) && len(v) == len("2006-01-02") && c.day == "" {
		c.day, c.dayRow = v, row
	}
}

// leadingZero reports whether v is a run of digits, signed or not, that
// starts with a zero followed by another digit ("007", "-00.5"; not "0",
// "0.5").
func leadingZero(v string) bool {
	if v != "" && (v[0] == '+' || v[0] == '-') {
		v = v[1:]
	}
	return len(v) > 1 && v[0] == '0' && v[1] >= '0' && v[1] <= '9'
}

// mixedTimes reports whether every value is a time, some with a zone offset
// and some without: Arrow reads such a column as utf8 only.
func (c *csvColumn) mixedTimes() bool {
	return (c.isTimeUS || c.isTimeNano) && c.zoned && c.naive
}

// typ returns the narrowest type every value of the column parses as:
// int64, float64, boolean, timestamp (microseconds, or nanoseconds when a
// value needs them; with time zone UTC when every value has a zone offset,
// without one when none has), or utf8. A column with a number that int64
// or float64 would not give back as written (a leading zero, an integer
// beyond int64) is utf8, and only true and false are booleans.
func (c *csvColumn) typ() arrow.DataType {
	switch {
	case !c.any:
		return arrow.BinaryTypes.String
	case c.isInt:
		return arrow.PrimitiveTypes.Int64
	case c.isFloat:
		return arrow.PrimitiveTypes.Float64
	case c.isBool:
		return arrow.FixedWidthTypes.Boolean
	case (c.isTimeUS || c.isTimeNano) && c.zoned != c.naive:
		ts := &arrow.TimestampType{Unit: arrow.Microsecond}
		if !c.isTimeUS {
			ts.Unit = arrow.Nanosecond
		}
		if c.zoned {
			ts.TimeZone = "UTC"
		}
		return ts
	}
	return arrow.BinaryTypes.String
}

// utf8BOM is the byte order mark some programs (Excel) write at the start of
// a UTF-8 CSV file.
const utf8BOM = "\ufeff"

// csvInput returns a buffered reader of a CSV file past its byte order mark,
// if it has one, which would otherwise become part of the first column's
// name.
func csvInput(fh io.Reader) (*bufio.Reader, error) {
	br := bufio.NewReaderSize(fh, 1<<20)
	b, err := br.Peek(len(utf8BOM))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if string(b) == utf8BOM {
		if _, err := br.Discard(len(utf8BOM)); err != nil {
			return nil, err
		}
	}
	return br, nil
}

// checkCSVValue returns the error parsing a non-empty CSV value as type t
// gives, as the Arrow CSV reader parses it; nil for a type whose values are
// not checked. A boolean is `true` or `false` only, as when a column's type
// is inferred: the Arrow reader would also take 1, T or TRUE.
func checkCSVValue(t arrow.DataType, v string) error {
	if v == "" {
		return nil // null
	}
	switch t.ID() {
	case arrow.INT64:
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return fmt.Errorf("%q is not an int64", v)
		}
	case arrow.FLOAT64:
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			return fmt.Errorf("%q is not a double", v)
		}
	case arrow.BOOL:
		if v != "true" && v != "false" {
			return fmt.Errorf("%q is not a bool (true or false)", v)
		}
	}
	return nil
}

// inferCSV reads a CSV file with a header row through once and decides the
// type of each column from all its values, not from the first rows only, so
// that reading the file with that schema cannot fail half-way. The columns
// of fixed, their types are not inferred (join keys: a string key "007" stays
// a string), but their values are checked, so that a bad one is an error
// naming its row and column; a column without values takes its type from
// empty, or utf8. An empty field is null, and a byte order mark before the
// header is skipped. It returns the schema and the number of rows.
func inferCSV(path string, fixed, empty map[string]arrow.DataType) (*arrow.Schema, int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer fh.Close()
	br, err := csvInput(fh)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	r := stdcsv.NewReader(br)
	r.ReuseRecord = true
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("%s: empty file: a CSV entity table needs a header row", path)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	names := append([]string(nil), header...)
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			return nil, 0, fmt.Errorf("%s: column %q appears twice in the header", path, n)
		}
		seen[n] = true
	}
	cols := make([]csvColumn, len(names))
	for i, n := range names {
		cols[i].timestamp = empty[n] != nil
	}
	var rows int64
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", path, err)
		}
		rows++
		for i, v := range rec {
			if t := fixed[names[i]]; t != nil {
				// The Arrow reader that reads the file next reports a bad
				// value without its row or column: check the values here,
				// where both are known.
				if err := checkCSVValue(t, v); err != nil {
					return nil, 0, fmt.Errorf("%s: row %d: column %q: %w", path, rows, names[i], err)
				}
				continue
			}
			cols[i].see(v, rows)
		}
	}
	fields := make([]arrow.Field, len(names))
	for i, n := range names {
		t := fixed[n]
		switch {
		case t != nil:
		case !cols[i].any && empty[n] != nil:
			t = empty[n]
		case empty[n] != nil && cols[i].day != "" && (cols[i].isTimeUS || cols[i].isTimeNano):
			// The timestamp column: a day read as its midnight UTC would
			// hide the day's events from a label known at its end, as a
			// date32 or date64 column would (readEntityTable refuses those).
			return nil, 0, fmt.Errorf("%s: row %d: column %q: %q is a day and not an instant: give each row the instant up to which it may see events, such as 2026-11-26T23:59:59.999Z for a label known at the day's end (a day alone would read as midnight UTC, which sees none of that day's events)", path, cols[i].dayRow, n, cols[i].day)
		case empty[n] != nil && cols[i].mixedTimes():
			// The timestamp column (the one empty types): read as utf8,
			// it would fail with a message that does not say why.
			return nil, 0, fmt.Errorf("%s: column %q mixes times with a zone offset and times without one: give every time an offset (2026-11-26T10:00:00Z) or none (2026-11-26 10:00:00, read as UTC)", path, n)
		default:
			t = cols[i].typ()
			if c := &cols[i]; empty[n] != nil && t.ID() == arrow.STRING && c.anInt != "" && c.aTime != "" {
				return nil, 0, fmt.Errorf("%s: column %q mixes int64 Unix milliseconds (row %d: %s) and times (row %d: %q): give every row one or the other", path, n, c.anIntRow, c.anInt, c.aTimeRow, c.aTime)
			}
			if empty[n] != nil && t.ID() == arrow.STRING && cols[i].notTime != "" {
				return nil, 0, fmt.Errorf("%s: row %d: column %q: %q is not a time (like 2026-11-26T10:00:00Z or 2026-11-26 10:00:00.123), nor are all the column's values int64 Unix milliseconds", path, cols[i].notTimeRow, n, cols[i].notTime)
			}
		}
		fields[i] = arrow.Field{Name: n, Type: t, Nullable: true}
	}
	return arrow.NewSchema(fields, nil), rows, nil
}
