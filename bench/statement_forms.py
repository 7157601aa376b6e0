"""Which statement form should a batch use? Measured side by side in one run.

    .venv/bin/python -m bench.statement_forms [--rows 50000] [--batch 100] [--repeat 3]

Starts its own PostgreSQL with fsync and synchronous_commit ON, generates W1-like
rows (12 columns) deterministically, and writes them in batches of `--batch`,
one transaction per batch (the json form: one autocommit statement), in each form:

- populate:   INSERT ... SELECT p.a ... FROM json_populate_recordset(NULL::w1, %s::json)
              ON CONFLICT DO NOTHING (the target's for built-in column types:
              one autocommit statement, atomic on its own)
- populate-plain: the same without ON CONFLICT (the target's while a table's
              batches meet no existing key)
- json:       INSERT ... SELECT CAST(x.a AS type) ... FROM json_to_recordset(%s::json)
              (the target's for other column types)
- unnest:     INSERT ... SELECT CAST(u.c0 AS type) ... FROM unnest(%s::text[], ...) (former)
- values:     INSERT ... VALUES (%s, ...), (%s, ...) ...  (one multi-row statement)
- executemany: executemany of a one-row INSERT (psycopg pipeline mode)
- copy:       COPY ... FROM STDIN in a transaction (the practical limit; no ON CONFLICT)

Prints the median rows/s of each and its ratio to COPY.
"""

from __future__ import annotations

import argparse
import decimal
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import orjson
import psycopg
from psycopg import sql

from bench.workloads import W1_COLUMNS, W1_DDL, w1_rows
from target_batched_postgres.pgtypes import ColumnType
from target_batched_postgres.postgres_writer import RowEncoder
from target_batched_postgres.sql import OnConflict, build_insert, build_populate_insert
from target_batched_postgres.values import ENCODERS
from tests.servers import start_postgres

_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)

DDL = W1_DDL.format(table="w1")
COLUMNS = W1_COLUMNS


def make_rows(n: int) -> list[dict[str, Any]]:
    # As the target sees them: decoded from JSON with exact Decimals.
    return [_DECODER.decode(orjson.dumps(row)) for row in w1_rows(n)]


def column_types(conn: psycopg.Connection) -> list[ColumnType]:
    cur = conn.execute(
        "SELECT n.nspname, t.typname, t.typcategory FROM pg_attribute a"
        " JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE a.attrelid = 'w1'::regclass AND a.attnum > 0 ORDER BY a.attnum"
    )
    return [ColumnType.from_catalog(*row) for row in cur]


def form_json(conn: psycopg.Connection, batch: Sequence[dict[str, Any]]) -> None:
    types = column_types_cache[0]
    statement = build_insert("public", "w1", COLUMNS, types)
    conn.execute(statement, [RowEncoder(COLUMNS, COLUMNS, types)(batch)])


def form_populate(conn: psycopg.Connection, batch: Sequence[dict[str, Any]]) -> None:
    types = column_types_cache[0]
    statement = build_populate_insert("public", "w1", COLUMNS)
    conn.execute(statement, [RowEncoder(COLUMNS, COLUMNS, types).populate(batch)])


def form_populate_plain(conn: psycopg.Connection, batch: Sequence[dict[str, Any]]) -> None:
    types = column_types_cache[0]
    statement = build_populate_insert("public", "w1", COLUMNS, on_conflict=OnConflict.ERROR)
    conn.execute(statement, [RowEncoder(COLUMNS, COLUMNS, types).populate(batch)])


def form_unnest(conn: psycopg.Connection, batch: Sequence[dict[str, Any]]) -> None:
    types = column_types_cache[0]
    casts = [
        sql.SQL("CAST(u.{} AS {})").format(
            sql.Identifier(f"c{i}"), sql.Identifier(t.schema, t.name)
        )
        for i, t in enumerate(types)
    ]
    statement = sql.SQL(
        "INSERT INTO w1 ({}) SELECT {} FROM unnest({}) AS u({}) ON CONFLICT DO NOTHING"
    ).format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        sql.SQL(", ").join(casts),
        sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in COLUMNS),
        sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(len(COLUMNS))),
    )
    encoders = [ENCODERS[t.kind] for t in types]
    params = [[enc(r[c]) for r in batch] for c, enc in zip(COLUMNS, encoders, strict=True)]
    with conn.transaction():
        conn.execute(statement, params)


def _py_row(r: dict[str, Any]) -> list[Any]:
    return [
        *(r[c] for c in COLUMNS[:9]),
        orjson.dumps(r["meta"]).decode(),
        r["tags"],
        r["note"],
    ]


def form_values(conn: psycopg.Connection, batch: Sequence[dict[str, Any]]) -> None:
    one = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)))
    statement = sql.SQL("INSERT INTO w1 ({}) VALUES {} ON CONFLICT DO NOTHING").format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), sql.SQL(", ").join([one] * len(batch))
    )
    params = [v for r in batch for v in _py_row(r)]
    with conn.transaction():
        conn.execute(statement, params)


def form_executemany(conn: psycopg.Connection, batch: Sequence[dict[str, Any]]) -> None:
    statement = sql.SQL("INSERT INTO w1 ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(statement, [_py_row(r) for r in batch])


def form_copy(conn: psycopg.Connection, batch: Sequence[dict[str, Any]]) -> None:
    with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("COPY w1 ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
            )
        ) as copy,
    ):
        for r in batch:
            copy.write_row(_py_row(r))


column_types_cache: list[list[ColumnType]] = []
FORMS: dict[str, Callable[[psycopg.Connection, Sequence[dict[str, Any]]], None]] = {
    "populate": form_populate,
    "populate-plain": form_populate_plain,
    "json": form_json,
    "unnest": form_unnest,
    "values": form_values,
    "executemany": form_executemany,
    "copy": form_copy,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    server = start_postgres(durable=True)
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            rates: dict[str, list[float]] = {name: [] for name in FORMS}
            for _ in range(args.repeat):
                for name, form in FORMS.items():
                    conn.execute("DROP TABLE IF EXISTS w1")
                    conn.execute(DDL)
                    column_types_cache[:] = [column_types(conn)]
                    started = time.perf_counter()
                    for i in range(0, len(rows), args.batch):
                        form(conn, rows[i : i + args.batch])
                    rates[name].append(len(rows) / (time.perf_counter() - started))
                    count = conn.execute("SELECT count(*) FROM w1").fetchone()
                    assert count == (len(rows),), (name, count)
    finally:
        server.stop()
    copy_rate = statistics.median(rates["copy"])
    print(f"{args.rows} rows, batch {args.batch}, median of {args.repeat}, fsync on")
    print(f"{'form':<15} {'rows/s':>10} {'x COPY':>8}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<15} {rate:>10,.0f} {rate / copy_rate:>8.2f}")


if __name__ == "__main__":
    main()
