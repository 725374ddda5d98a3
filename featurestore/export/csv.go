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
}

func (c *csvColumn) see(v string) {
	if v == "" {
		return // null
	}
	if !c.any {
		c.any = true
		c.isInt, c.isFloat, c.isBool, c.isTimeUS, c.isTimeNano = true, true, true, true, true
	}
	if c.isInt {
		_, err := strconv.ParseInt(v, 10, 64)
		c.isInt = err == nil
	}
	if c.isFloat && !c.isInt {
		_, err := strconv.ParseFloat(v, 64)
		c.isFloat = err == nil
	}
	if c.isBool {
		_, err := strconv.ParseBool(v)
		c.isBool = err == nil
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
}

// typ returns the narrowest type every value of the column parses as:
// int64, float64, boolean, timestamp (microseconds, or nanoseconds when a
// value needs them; with time zone UTC when every value has a zone offset,
// without one when none has), or utf8.
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

// inferCSV reads a CSV file with a header row through once and decides the
// type of each column from all its values, not from the first rows only, so
// that reading the file with that schema cannot fail half-way. The columns
// of fixed, their types are not inferred (join keys: a string key "007" stays
// a string); a column without values takes its type from empty, or utf8.
// An empty field is null. It returns the schema and the number of rows.
func inferCSV(path string, fixed, empty map[string]arrow.DataType) (*arrow.Schema, int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer fh.Close()
	r := stdcsv.NewReader(bufio.NewReaderSize(fh, 1<<20))
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
			if fixed[names[i]] == nil {
				cols[i].see(v)
			}
		}
	}
	fields := make([]arrow.Field, len(names))
	for i, n := range names {
		t := fixed[n]
		switch {
		case t != nil:
		case !cols[i].any && empty[n] != nil:
			t = empty[n]
		default:
			t = cols[i].typ()
		}
		fields[i] = arrow.Field{Name: n, Type: t, Nullable: true}
	}
	return arrow.NewSchema(fields, nil), rows, nil
}
