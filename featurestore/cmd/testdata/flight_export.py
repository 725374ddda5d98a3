"""A training job that gets its training set from featurestore serve over
Arrow Flight, with no file in between (docs/flight.md).

Usage:
  flight_export.py --location grpc://HOST:PORT --entities LABELS.parquet
                   --feature-service NAME [--token TOKEN]
                   [--expected TRAIN.arrow] [--other-token TOKEN]

Reads the label table, sends it with the export command, and receives the
training set. With --expected (a file 'featurestore export' wrote for the
same table) it checks that both are equal, and that the server's errors
reach pyarrow as Flight errors naming the problem: an unknown feature, no
credentials, and --other-token, a principal not granted every view.
Prints one summary line; exits 1 on a mismatch.
"""

import argparse
import json
import sys

import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.ipc as ipc
import pyarrow.parquet as pq


def training_set(client, entities, command, token=None):
    """Sends the entity table with the export command; returns the training
    set: the table's columns, in its row order, then one column per feature."""
    headers = [(b"authorization", b"Bearer " + token.encode())] if token else []
    options = flight.FlightCallOptions(headers=headers)
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    writer, reader = client.do_exchange(descriptor, options=options)
    with writer:
        writer.begin(entities.schema)
        writer.write_table(entities, max_chunksize=65536)
        writer.done_writing()  # the server starts once the table is complete
        return reader.read_all()


def expect_error(what, fn, kind, text):
    try:
        fn()
    except kind as e:
        if text not in str(e):
            sys.exit(f"{what}: {type(e).__name__} {e}; want it to mention {text!r}")
        return type(e).__name__
    except Exception as e:  # noqa: BLE001 - report what came instead
        sys.exit(f"{what}: {type(e).__name__} {e}; want {kind.__name__}")
    sys.exit(f"{what}: no error; want {kind.__name__}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--location", required=True)
    p.add_argument("--entities", required=True)
    p.add_argument("--feature-service", required=True)
    p.add_argument("--token")
    p.add_argument("--expected")
    p.add_argument("--other-token")
    args = p.parse_args()

    client = flight.connect(args.location)
    entities = pq.read_table(args.entities)
    train = training_set(client, entities, {"feature_service": args.feature_service}, args.token)
    df = pl.from_arrow(train)  # what a training job does next
    summary = [f"training set over Flight: {train.num_rows} rows, {train.num_columns} columns"]
    if df.height != entities.num_rows:
        sys.exit(f"{df.height} rows in the training set, {entities.num_rows} in the entity table")

    if args.expected:
        with open(args.expected, "rb") as fh:
            want = ipc.open_file(fh).read_all()
        if train.schema.names != want.schema.names:
            sys.exit(f"columns {train.schema.names}, want {want.schema.names}")
        if not train.schema.equals(want.schema, check_metadata=False):
            sys.exit(f"schema over Flight:\n{train.schema}\nof the file export:\n{want.schema}")
        for key in (b"featurestore.project", b"featurestore.registry_version"):
            got, exp = (train.schema.metadata or {}).get(key), (want.schema.metadata or {}).get(key)
            if got != exp or exp is None:
                sys.exit(f"schema metadata {key.decode()}={got!r}, want {exp!r}")
        for name in want.schema.names:
            if not train.column(name).equals(want.column(name)):
                sys.exit(f"column {name!r} over Flight differs from the file export")
        summary.append("equal to the file export")

        errors = [
            expect_error("unknown feature",
                         lambda: training_set(client, entities, {"features": ["card_txn:nope"]}, args.token),
                         pa.ArrowException, 'unknown feature "nope"'),
            expect_error("no credentials",
                         lambda: training_set(client, entities, {"feature_service": args.feature_service}),
                         flight.FlightUnauthenticatedError, "authentication required"),
        ]
        if args.other_token:
            errors.append(expect_error(
                "a view not granted",
                lambda: training_set(client, entities, {"feature_service": args.feature_service}, args.other_token),
                flight.FlightUnauthorizedError, f'may not read feature service "{args.feature_service}"'))
        summary.append("errors as " + ", ".join(errors))
    print("; ".join(summary))


if __name__ == "__main__":
    main()
