"""Which statement form should a batch use? Measured side by side in one run.

    .venv/bin/python -m bench.statement_forms [--rows 50000] [--batch 100] [--repeat 3]

Starts its own PostgreSQL with fsync and synchronous_commit ON, generates W1-like
rows (12 columns) deterministically, and writes them in batches of `--batch`,
one transaction per batch, in each form:

- unnest:     INSERT ... SELECT CAST(u.c0 AS type) ... FROM unnest(%s::text[], ...)  (the target's)
- values:     INSERT ... VALUES (%s, ...), (%s, ...) ...  (one multi-row statement)
- executemany: executemany of a one-row INSERT (psycopg pipeline mode)
- copy:       COPY ... FROM STDIN (the practical limit; no ON CONFLICT possible)

Prints the median rows/s of each and its ratio to COPY.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import psycopg
from psycopg import sql

from target_batched_postgres.pgtypes import ColumnType
from target_batched_postgres.sql import build_insert
from target_batched_postgres.values import ENCODERS
from tests.servers import start_postgres

DDL = """
CREATE TABLE w1 (
  id uuid PRIMARY KEY, account_id text NOT NULL, merchant_id text, status text,
  amount numeric, seq bigint, active boolean, created_at timestamptz, updated_at timestamptz,
  meta jsonb, tags text[], note text)
"""
COLUMNS = [
    "id", "account_id", "merchant_id", "status", "amount", "seq",
    "active", "created_at", "updated_at", "meta", "tags", "note",
]  # fmt: skip


def make_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    base = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": str(uuid.UUID(int=rnd.getrandbits(128))),
                "account_id": f"acc-{rnd.randrange(10_000)}",
                "merchant_id": None if i % 3 == 0 else f"m-{rnd.randrange(500)}",
                "status": rnd.choice(["NEW", "CONFIRMED", "CANCELLED"]),
                "amount": round(rnd.uniform(1, 1000), 2),
                "seq": i,
                "active": i % 2 == 0,
                "created_at": (base + dt.timedelta(seconds=i)).isoformat(),
                "updated_at": (base + dt.timedelta(seconds=i, minutes=5)).isoformat(),
                "meta": {"k": i, "v": [1, 2, 3]},
                "tags": ["a", "b"] if i % 2 else ["c"],
                "note": "x" * 80,
            }
        )
    return rows


def column_types(conn: psycopg.Connection) -> list[ColumnType]:
    cur = conn.execute(
        "SELECT n.nspname, t.typname, t.typcategory FROM pg_attribute a"
        " JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE a.attrelid = 'w1'::regclass AND a.attnum > 0 ORDER BY a.attnum"
    )
    return [ColumnType.from_catalog(*row) for row in cur]


def form_unnest(conn: psycopg.Connection, batch: Sequence[dict[str, Any]]) -> None:
    types = column_types_cache[0]
    statement = build_insert("public", "w1", COLUMNS, types)
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
    print(f"{'form':<12} {'rows/s':>10} {'x COPY':>8}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<12} {rate:>10,.0f} {rate / copy_rate:>8.2f}")


if __name__ == "__main__":
    main()
