"""Writes a file of historical events with the tools ML engineers use.

Usage: events.py EVENTS.json DIR

EVENTS.json is written by TestPythonBackfillFiles (backfill_table_test.go):
events of the txns source of e2eDefs (card, ts as Unix ms, amount,
merchant; nulls as null). This script writes them into DIR as polars
(Arrow IPC with string_view text, a categorical merchant; Parquet), DuckDB
(COPY TO Parquet, TIMESTAMPTZ and VARCHAR) and pyarrow (Spark's INT96
timestamps) write them, and checks that each file has the types the test is
about, so that a change of a tool's defaults fails here rather than
silently testing another case.

Exits 0 and prints one summary line when every file is as expected;
otherwise prints every mismatch and exits 1.
"""

import datetime as dt
import json
import os
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

errors = []


def expect(path, types):
    if path.endswith(".parquet"):
        schema = pq.read_schema(path)
    else:
        with open(path, "rb") as fh:
            schema = ipc.open_file(fh).schema
    for name, want in types.items():
        got = str(schema.field(name).type)
        if got != want:
            errors.append(f"{os.path.basename(path)}: column {name!r} has type {got}, want {want}")


def main():
    with open(sys.argv[1]) as fh:
        events = json.load(fh)
    out = sys.argv[2]
    p = lambda name: os.path.join(out, name)  # noqa: E731
    utc = dt.timezone.utc
    df = pl.DataFrame(
        {
            "card": pl.Series([e["card"] for e in events], dtype=pl.String),
            "ts": pl.Series([dt.datetime.fromtimestamp(e["ts"] / 1000, utc) for e in events], dtype=pl.Datetime("ms", "UTC")),
            "amount": pl.Series([e["amount"] for e in events], dtype=pl.Float64),
            "merchant": pl.Series([e["merchant"] for e in events], dtype=pl.String),
        }
    )
    df.write_ipc(p("polars.arrow"))
    expect(p("polars.arrow"), {"card": "string_view", "merchant": "string_view"})
    df.with_columns(pl.col("merchant").cast(pl.Categorical)).write_ipc(p("polars_cat.arrow"))
    expect(p("polars_cat.arrow"), {"merchant": "dictionary<values=string_view, indices=uint32, ordered=0>"})
    df.write_parquet(p("polars.parquet"))
    expect(p("polars.parquet"), {"card": "large_string"})

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events_in", df.to_arrow())
    con.execute(
        "COPY (SELECT card::VARCHAR AS card, ts::TIMESTAMPTZ AS ts, amount::DOUBLE AS amount, "
        f"merchant::VARCHAR AS merchant FROM events_in) TO '{p('duckdb.parquet')}' (FORMAT parquet)"
    )
    expect(p("duckdb.parquet"), {"card": "string", "ts": "timestamp[us, tz=UTC]"})

    t = df.to_arrow()
    t = t.set_column(1, "ts", t.column("ts").cast(pa.timestamp("ns", "UTC")))
    pq.write_table(t, p("int96.parquet"), use_deprecated_int96_timestamps=True, store_schema=False)
    if pq.ParquetFile(p("int96.parquet")).schema.column(1).physical_type != "INT96":
        errors.append("int96.parquet: ts is not stored as INT96")

    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print(
        f"wrote {len(os.listdir(out))} event files of {len(events)} events with "
        f"pyarrow {pa.__version__}, polars {pl.__version__}, duckdb {duckdb.__version__}"
    )


if __name__ == "__main__":
    main()
