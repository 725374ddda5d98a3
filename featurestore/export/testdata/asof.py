"""DuckDB's baseline of the export benchmark (asof_bench_test.go).

Usage: asof.py --events EVENTS.parquet --entities ENTITIES.parquet
               --ttl-ms N [--runs R] [--threads T]

Computes the last-value part of the benchmark's training set with an ASOF
JOIN: for each entity row, the amount and the category of the entity's
newest event at or before the row's time, null when that event is older
than the TTL. Reads both Parquet files in the query, materialises the
result as an Arrow table, and times the query alone (not the start of
Python or the import of DuckDB). Prints JSON: the seconds and CPU seconds
(all threads) of each run, the
rows, the non-null values and the sum of the amounts (which the benchmark
compares with the export's), and the process's peak RSS (Python, pyarrow
and DuckDB together).
"""

import argparse
import json
import resource
import time

import duckdb
import pyarrow.compute as pc


def peak_rss_kb():
    """VmHWM: the peak RSS of this program; ru_maxrss would include the peak
    of the process that started it, kept across its fork and exec."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--events", required=True)
    p.add_argument("--entities", required=True)
    p.add_argument("--ttl-ms", type=int, required=True)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="DuckDB threads; 0 for its default (the number of CPUs)")
    args = p.parse_args()

    con = duckdb.connect()
    if args.threads:
        con.execute(f"SET threads = {args.threads}")

    def lit(path):
        return "'" + path.replace("'", "''") + "'"

    fresh = f"epoch_ms(e.event_timestamp) - epoch_ms(ev.event_time) <= {args.ttl_ms}"
    query = f"""
        SELECT e.*,
               CASE WHEN {fresh} THEN ev.amount END AS "activity:amount",
               CASE WHEN {fresh} THEN ev.cat END AS "activity:cat"
        FROM read_parquet({lit(args.entities)}) e
        ASOF LEFT JOIN read_parquet({lit(args.events)}) ev
          ON e.user_id = ev.user_id AND e.event_timestamp >= ev.event_time
    """
    seconds, cpu_seconds = [], []
    for _ in range(args.runs):
        start, cpu = time.perf_counter(), time.process_time()
        result = con.sql(query).to_arrow_table()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu)  # every thread of the process

    amount = result.column("activity:amount")
    print(json.dumps({
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "rows": result.num_rows,
        "amount_values": len(amount) - amount.null_count,
        "amount_sum": pc.sum(amount).as_py() or 0.0,
        "cat_values": len(result.column("activity:cat")) - result.column("activity:cat").null_count,
        "maxrss_kb": peak_rss_kb(),
    }))


if __name__ == "__main__":
    main()
