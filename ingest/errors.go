package ingest

import "fmt"

type detailError string

func (e detailError) Error() string { return string(e) }

func errorf(format string, args ...any) error { return detailError(fmt.Sprintf(format, args...)) }
