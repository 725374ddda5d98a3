"""Writes an entity table with the tools ML engineers make them with.

Usage: entities.py ROWS.json DIR

ROWS.json is written by TestPythonEntityTables (interop_test.go): the
columns of an entity table (label double, user_id string, shop_id int64,
bank string, account_no int64, the request fields channel string and items
int64, the label tags a list of strings, event_timestamp as Unix ms) and its
rows.
This script writes the same rows into DIR as polars, DuckDB and pyarrow (as
pandas does) write them, each file in the tools' own defaults unless its
name says otherwise, and checks that each file has the column types the
test is about (read back with pyarrow, which shows the file's own types):
if a tool's defaults change, this fails and says so, rather than the test
silently checking another case.

Exits 0 and prints one summary line when every file is written as
expected; otherwise prints every mismatch and exits 1.
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


def arrow_schema(path):
    """The schema as stored in the file, by pyarrow."""
    if path.endswith(".parquet"):
        return pq.read_schema(path)
    with open(path, "rb") as fh:
        if path.endswith(".arrows"):
            return ipc.open_stream(fh).schema
        return ipc.open_file(fh).schema


def expect(path, types):
    schema = arrow_schema(path)
    for name, want in types.items():
        got = str(schema.field(name).type)
        if got != want:
            errors.append(f"{os.path.basename(path)}: column {name!r} has type {got}, want {want}")


def expect_parquet_physical(path, name, want):
    col = pq.ParquetFile(path).schema.column(pq.ParquetFile(path).schema.names.index(name))
    if col.physical_type != want:
        errors.append(f"{os.path.basename(path)}: column {name!r} is stored as {col.physical_type}, want {want}")


def main():
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    out = sys.argv[2]
    names = [c["name"] for c in spec["columns"]]
    cols = {n: [r[i] for r in spec["rows"]] for i, n in enumerate(names)}
    utc = dt.timezone.utc
    times = [dt.datetime.fromtimestamp(ms / 1000, utc) for ms in cols["event_timestamp"]]
    df = pl.DataFrame(
        {
            "label": pl.Series(cols["label"], dtype=pl.Float64),
            "user_id": pl.Series(cols["user_id"], dtype=pl.String),
            "shop_id": pl.Series(cols["shop_id"], dtype=pl.Int64),
            "bank": pl.Series(cols["bank"], dtype=pl.String),
            "account_no": pl.Series(cols["account_no"], dtype=pl.Int64),
            "channel": pl.Series(cols["channel"], dtype=pl.String),
            "items": pl.Series(cols["items"], dtype=pl.Int64),
            "tags": pl.Series(cols["tags"], dtype=pl.List(pl.String)),
            # polars' default unit, microseconds
            "event_timestamp": pl.Series(times, dtype=pl.Datetime("us", "UTC")),
        }
    )
    p = lambda name: os.path.join(out, name)  # noqa: E731

    # polars: Arrow IPC (text as string_view), file and stream; Parquet
    # (large_string), in several row groups; categoricals (keys and a
    # request field) with an unsigned request field.
    df.write_ipc(p("polars.arrow"))
    expect(
        p("polars.arrow"),
        {"user_id": "string_view", "tags": "large_list<item: string_view>", "event_timestamp": "timestamp[us, tz=UTC]"},
    )
    df.write_ipc_stream(p("polars.arrows"))
    expect(p("polars.arrows"), {"user_id": "string_view", "tags": "large_list<item: string_view>"})
    df.write_parquet(p("polars.parquet"), row_group_size=64)
    expect(p("polars.parquet"), {"user_id": "large_string", "shop_id": "int64", "tags": "large_list<element: large_string>"})
    if pq.ParquetFile(p("polars.parquet")).num_row_groups < 2:
        errors.append("polars.parquet: one row group, want several")
    cat = df.with_columns(
        pl.col("user_id").cast(pl.Categorical),
        pl.col("bank").cast(pl.Categorical),
        pl.col("channel").cast(pl.Categorical),
        pl.col("items").cast(pl.UInt64),
    )
    cat.write_ipc(p("polars_cat.arrow"))
    expect(
        p("polars_cat.arrow"),
        {
            "user_id": "dictionary<values=string_view, indices=uint32, ordered=0>",
            "channel": "dictionary<values=string_view, indices=uint32, ordered=0>",
            "items": "uint64",
        },
    )
    cat.write_parquet(p("polars_cat.parquet"))
    expect(
        p("polars_cat.parquet"),
        {
            "user_id": "dictionary<values=string, indices=uint32, ordered=0>",
            "channel": "dictionary<values=string, indices=uint32, ordered=0>",
            "items": "uint64",
        },
    )
    ns = df.with_columns(pl.col("event_timestamp").cast(pl.Datetime("ns", "UTC")))
    ns.write_parquet(p("polars_ns.parquet"))
    expect(p("polars_ns.parquet"), {"event_timestamp": "timestamp[ns, tz=UTC]"})
    df.with_columns(pl.col("event_timestamp").dt.date()).write_parquet(p("polars_date.parquet"))
    expect(p("polars_date.parquet"), {"event_timestamp": "date32[day]"})

    # DuckDB: COPY ... TO Parquet, from the same rows.
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("rows_in", df.to_arrow())
    select = (
        "SELECT label::DOUBLE AS label, user_id::VARCHAR AS user_id, shop_id::{shop} AS shop_id, "
        "bank::VARCHAR AS bank, account_no::{account} AS account_no, channel::VARCHAR AS channel, "
        "items::{items} AS items, tags::VARCHAR[] AS tags, event_timestamp::{ts} AS event_timestamp "
        "FROM rows_in {where}"
    )

    def copy(name, shop="BIGINT", account="BIGINT", items="BIGINT", ts="TIMESTAMPTZ", where=""):
        q = select.format(shop=shop, account=account, items=items, ts=ts, where=where)
        con.execute(f"COPY ({q}) TO '{p(name)}' (FORMAT parquet)")

    copy("duckdb.parquet")
    expect(p("duckdb.parquet"), {"user_id": "string", "shop_id": "int64", "event_timestamp": "timestamp[us, tz=UTC]"})
    # TIMESTAMP (without time zone) holds UTC wall times here: read as UTC.
    copy("duckdb_naive.parquet", shop="INTEGER", account="UTINYINT", items="UBIGINT", ts="TIMESTAMP")
    expect(
        p("duckdb_naive.parquet"),
        {"shop_id": "int32", "account_no": "uint8", "items": "uint64", "event_timestamp": "timestamp[us]"},
    )
    copy("duckdb_hugeint.parquet", shop="HUGEINT")
    expect(p("duckdb_hugeint.parquet"), {"shop_id": "double"})
    copy("duckdb_empty.parquet", where="WHERE false")
    if pq.ParquetFile(p("duckdb_empty.parquet")).metadata.num_rows != 0:
        errors.append("duckdb_empty.parquet: has rows")

    # pyarrow, as pandas writes through it: a categorical is a dictionary
    # (a key and a request field);
    # Spark's INT96 timestamps, without the Arrow schema.
    t = df.to_arrow()
    t = t.set_column(1, "user_id", pa.array(cols["user_id"], pa.string()).dictionary_encode())
    t = t.set_column(t.schema.get_field_index("channel"), "channel", pa.array(cols["channel"], pa.string()).dictionary_encode())
    pq.write_table(t, p("pandas_cat.parquet"))
    expect(
        p("pandas_cat.parquet"),
        {
            "user_id": "dictionary<values=string, indices=int32, ordered=0>",
            "channel": "dictionary<values=string, indices=int32, ordered=0>",
        },
    )
    t = df.to_arrow().cast(
        pa.schema([(f.name, pa.timestamp("ns", "UTC") if f.name == "event_timestamp" else f.type) for f in df.to_arrow().schema])
    )
    pq.write_table(t, p("int96.parquet"), use_deprecated_int96_timestamps=True, store_schema=False)
    expect_parquet_physical(p("int96.parquet"), "event_timestamp", "INT96")

    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print(
        f"wrote {len(os.listdir(out))} entity tables of {len(spec['rows'])} rows with "
        f"pyarrow {pa.__version__}, polars {pl.__version__}, duckdb {duckdb.__version__}"
    )


if __name__ == "__main__":
    main()
