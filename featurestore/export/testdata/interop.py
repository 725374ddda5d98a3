"""Reads what the feature store writes with pyarrow, polars and DuckDB.

Usage: interop.py EXPECTED.json

EXPECTED.json is written by TestPythonInterop (interop_test.go): for each
feature view, the committed files of its offline log (the manifest's list)
and the events they must hold; for each format of the training set (Arrow
IPC, Parquet), its file and the rows it must hold. Each table comes with its
columns: name, type in Arrow's notation, nullability, and the schema
metadata it must carry. Every library reads every file, and the columns,
types (time zone included), nullability and every value are compared with
the expectations, never with another library's reading. Timestamps compare
as Unix milliseconds, doubles exactly.

Exits 0 and prints one summary line when everything matches; otherwise
prints every mismatch found and exits 1.
"""

import json
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

TS = "timestamp[ms, tz=UTC]"
errors = []


def fail(msg):
    errors.append(msg)


def inner(t):
    return t[len("list<") : -1] if t.startswith("list<") else None


def pa_type(t):
    if inner(t):
        return pa.list_(pa_type(inner(t)))
    return {
        "string": pa.string(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "double": pa.float64(),
        "bool": pa.bool_(),
        TS: pa.timestamp("ms", tz="UTC"),
    }[t]


def pl_type(t):
    if inner(t):
        return pl.List(pl_type(inner(t)))
    return {
        "string": pl.String,
        "int32": pl.Int32,
        "int64": pl.Int64,
        "double": pl.Float64,
        "bool": pl.Boolean,
        TS: pl.Datetime("ms", "UTC"),
    }[t]


def duck_type(t):
    if inner(t):
        return duck_type(inner(t)) + "[]"
    return {
        "string": "VARCHAR",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "double": "DOUBLE",
        "bool": "BOOLEAN",
        TS: "TIMESTAMP WITH TIME ZONE",
    }[t]


def same(a, b):
    """Values equal, doubles exactly (JSON gives 5 for 5.0), lists item by item."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def compare_rows(where, exp, rows):
    want = exp["rows"]
    if exp.get("sort_by"):
        idx = [[c["name"] for c in exp["columns"]].index(n) for n in exp["sort_by"]]
        rows = sorted(rows, key=lambda r: [r[i] for i in idx])
    if len(rows) != len(want):
        fail(f"{where}: {len(rows)} rows, want {len(want)}")
        return
    bad = 0
    for i, (got, w) in enumerate(zip(rows, want)):
        for j, col in enumerate(exp["columns"]):
            if not same(got[j], w[j]):
                bad += 1
                if bad <= 5:
                    fail(f"{where}: row {i} column {col['name']!r}: {got[j]!r}, want {w[j]!r}")
    if bad > 5:
        fail(f"{where}: {bad} values differ")


def check_names(where, names, exp):
    want = [c["name"] for c in exp["columns"]]
    if names != want:
        fail(f"{where}: columns {names}, want {want}")
        return False
    return True


def check_pyarrow(where, table, exp):
    if not check_names(where + " (pyarrow)", table.schema.names, exp):
        return
    for f, c in zip(table.schema, exp["columns"]):
        if f.type != pa_type(c["type"]):
            fail(f"{where} (pyarrow): column {f.name!r} has type {f.type}, want {c['type']}")
        if f.nullable != c["nullable"]:
            fail(f"{where} (pyarrow): column {f.name!r} nullable={f.nullable}, want {c['nullable']}")
    md = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    for k, v in exp["metadata"].items():
        if md.get(k) != v:
            fail(f"{where} (pyarrow): schema metadata {k}={md.get(k)!r}, want {v!r}")
    cols = []
    for f, col in zip(table.schema, table.columns):
        if pa.types.is_timestamp(f.type):
            col = col.cast(pa.int64())
        cols.append(col.to_pylist())
    compare_rows(where + " (pyarrow)", exp, [list(r) for r in zip(*cols)] if cols else [])


def check_polars(where, df, exp):
    if not check_names(where + " (polars)", df.columns, exp):
        return
    for name, dtype, c in zip(df.columns, df.dtypes, exp["columns"]):
        if dtype != pl_type(c["type"]):
            fail(f"{where} (polars): column {name!r} has type {dtype}, want {c['type']}")
        if not c["nullable"] and df[name].null_count() > 0:
            fail(f"{where} (polars): column {name!r} has nulls")
    df = df.with_columns([pl.col(n).dt.epoch("ms") for n, t in zip(df.columns, df.dtypes) if isinstance(t, pl.Datetime)])
    compare_rows(where + " (polars)", exp, [list(r) for r in df.rows()])


def check_duckdb(where, con, relation, exp):
    """relation is a FROM clause: read_parquet('…'), or a registered view."""
    desc = con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    names = [d[0] for d in desc]
    if not check_names(where + " (duckdb)", names, exp):
        return
    select = []
    for (name, typ, *_), c in zip(desc, exp["columns"]):
        if typ != duck_type(c["type"]):
            fail(f"{where} (duckdb): column {name!r} has type {typ}, want {duck_type(c['type'])}")
        q = '"' + name.replace('"', '""') + '"'
        if not c["nullable"]:
            n = con.sql(f"SELECT count(*) FROM {relation} WHERE {q} IS NULL").fetchall()[0][0]
            if n:
                fail(f"{where} (duckdb): column {name!r} has {n} nulls")
        select.append(f"epoch_ms({q})" if c["type"] == TS else q)
    rows = con.sql(f"SELECT {', '.join(select)} FROM {relation}").fetchall()
    compare_rows(where + " (duckdb)", exp, [list(r) for r in rows])


def read_arrow_files(files):
    tables = []
    for path in files:
        with open(path, "rb") as fh:
            tables.append(ipc.open_file(fh).read_all())
    return pa.concat_tables(tables)


def main():
    with open(sys.argv[1]) as fh:
        exp = json.load(fh)
    con = duckdb.connect()

    events = files = 0
    for view, t in sorted(exp["offline"].items()):
        where = f"offline log of {view}"
        table = read_arrow_files(t["files"])
        check_pyarrow(where, table, t)
        check_polars(where, pl.concat([pl.read_ipc(p) for p in t["files"]]), t)
        # DuckDB reads the Arrow data through its Arrow scan (it has no
        # Arrow IPC file reader of its own).
        con.register("offline_log", table)
        check_duckdb(where, con, "offline_log", t)
        con.unregister("offline_log")
        events += len(t["rows"])
        files += len(t["files"])

    rows = set()
    for fmt, t in sorted(exp["training"].items()):
        path = t["files"][0]
        where = f"training set {path}"
        if fmt == "parquet":
            check_pyarrow(where, pq.read_table(path), t)
            check_polars(where, pl.read_parquet(path), t)
            check_duckdb(where, con, "read_parquet('" + path.replace("'", "''") + "')", t)
            kv = dict(con.sql("SELECT decode(key), decode(value) FROM parquet_kv_metadata(?)", params=[path]).fetchall())
            for k, v in t["metadata"].items():
                if kv.get(k) != v:
                    fail(f"{where} (duckdb): key-value metadata {k}={kv.get(k)!r}, want {v!r}")
        else:
            if fmt == "arrows":  # the IPC stream format
                with open(path, "rb") as fh:
                    table = ipc.open_stream(fh).read_all()
                polars_table = pl.read_ipc_stream(path)
            else:
                table = read_arrow_files([path])
                polars_table = pl.read_ipc(path)
            check_pyarrow(where, table, t)
            check_polars(where, polars_table, t)
            con.register("training_set", table)
            check_duckdb(where, con, "training_set", t)
            con.unregister("training_set")
        rows.add(len(t["rows"]))

    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print(
        f"offline log: {len(exp['offline'])} views, {files} files, {events} events; "
        f"training sets: {len(exp['training'])} files, {', '.join(map(str, sorted(rows)))} rows each; "
        f"read with pyarrow {pa.__version__}, polars {pl.__version__}, duckdb {duckdb.__version__}"
    )


if __name__ == "__main__":
    main()
