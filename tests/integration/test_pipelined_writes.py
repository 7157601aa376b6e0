"""Batch inserts sent ahead in libpq's pipeline mode (PostgresWriter.send / finish).

Each test drives the writer by hand against the real server, so which
statements are in flight at once is certain, not a matter of timing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from target_batched_postgres.metrics import DrainerMetric, Metrics
from target_batched_postgres.postgres_writer import (
    InFlight,
    PostgresWriter,
    TableSpec,
    WriteResult,
)
from target_batched_postgres.retry import RetryPolicy
from target_batched_postgres.sql import OnConflict

DEAD_LETTERS = "_dead_letters"
PROPS = {"id": {"type": "integer"}, "name": {"type": ["string", "null"]}}
SPEC = TableSpec("people", PROPS, ["id"])
KEYS = ("id", "name")


def batch(start: int, stop: int, name: str = "n") -> list[dict[str, Any]]:
    return [{"id": i, "name": f"{name}{i}"} for i in range(start, stop)]


def parts(records: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    return [(KEYS, records)]


def sent(writer: PostgresWriter, records: list[dict[str, Any]], spec: TableSpec = SPEC) -> InFlight:
    """Send the records' insert; it must go (not left to `write`)."""
    statement = writer.send(spec, parts(records), [None])
    assert statement is not None, "the statement was not sent in pipeline mode"
    return statement


@pytest.fixture
def writer(pg_url: str, pg_schema: str) -> Iterator[PostgresWriter]:
    w = PostgresWriter(
        pg_url,
        pg_schema,
        dead_letter_table=DEAD_LETTERS,
        on_conflict=OnConflict.DO_NOTHING,
        fail_on_record_error=False,
        retry=RetryPolicy(max_attempts=4, backoff_seconds=0.05),
        metrics=Metrics(),
    )
    w.preflight()
    w.write(SPEC, KEYS, batch(0, 1))  # creates the table: sends need its columns known
    yield w
    w.close()


def people(
    conn: psycopg.Connection, schema: str, table: str = "people"
) -> list[tuple[int, str, int]]:
    """(id, name, transaction id that wrote the row) by id."""
    query = sql.SQL("SELECT id, name, xmin::text::bigint FROM {} ORDER BY id").format(
        sql.Identifier(schema, table)
    )
    return [tuple(row) for row in conn.execute(query).fetchall()]


def test_two_statements_in_flight_commit_each_on_its_own_in_the_order_sent(
    writer, pg_conn, pg_schema
):
    first = sent(writer, batch(1, 4))
    second = sent(writer, batch(4, 7))  # both in flight at once
    assert writer.finish(first) == WriteResult(3, 0, fallback_used=False)
    assert writer.finish(second) == WriteResult(3, 0, fallback_used=False)
    rows = people(pg_conn, pg_schema)
    assert [r[0] for r in rows] == list(range(7))
    first_xids = {r[2] for r in rows[1:4]}
    second_xids = {r[2] for r in rows[4:7]}
    assert len(first_xids) == len(second_xids) == 1, "each statement is its own transaction"
    assert first_xids.pop() < second_xids.pop(), "the first one sent committed first"
    # The connection is out of pipeline mode: an ordinary write goes on it.
    assert writer.write(SPEC, KEYS, batch(7, 8)) == WriteResult(1, 0, fallback_used=False)
    assert writer._metrics[DrainerMetric.INSERT_STATEMENTS] == 4


def test_a_failed_statement_is_written_row_by_row_after_the_one_sent_behind_it(
    writer, pg_conn, pg_schema
):
    bad = batch(1, 4)
    bad[1]["id"] = "not a number"
    first = sent(writer, bad)
    second = sent(writer, batch(4, 6))
    assert writer.finish(first) == WriteResult(2, 1, fallback_used=True)
    assert writer.finish(second) == WriteResult(2, 0, fallback_used=False)
    assert [r[0] for r in people(pg_conn, pg_schema)] == [0, 1, 3, 4, 5]
    letters = pg_conn.execute(
        sql.SQL("SELECT payload->>'id', sqlstate FROM {}").format(
            sql.Identifier(pg_schema, DEAD_LETTERS)
        )
    ).fetchall()
    assert letters == [("not a number", "22P02")]


def test_a_statement_sharing_a_key_with_one_in_flight_is_not_sent_behind_it(
    writer, pg_conn, pg_schema
):
    first = sent(writer, batch(1, 4))
    assert writer.send(SPEC, parts(batch(3, 6, name="later")), [None]) is None
    # Compared as PostgreSQL may read them: the integer column takes "3 " as 3.
    assert writer.send(SPEC, parts([{"id": "3 ", "name": "text key"}]), [None]) is None
    assert writer.finish(first) == WriteResult(3, 0, fallback_used=False)
    # Written after the first finished, the later write of key 3 loses (do_nothing).
    writer.write(SPEC, KEYS, batch(3, 6, name="later"))
    names = {r[0]: r[1] for r in people(pg_conn, pg_schema)}
    assert (names[3], names[5]) == ("n3", "later5")
    # A table without key properties has no order to keep: any batch may follow.
    spec = TableSpec("events", PROPS, [])
    writer.write(spec, KEYS, batch(0, 1))
    one = sent(writer, batch(1, 3), spec)
    two = sent(writer, batch(1, 3), spec)
    assert writer.finish(one) == writer.finish(two) == WriteResult(2, 0, fallback_used=False)


def test_a_replayed_batch_in_flight_meets_its_rows_and_writes_none_twice(
    writer, pg_conn, pg_schema
):
    writer.write(SPEC, KEYS, batch(1, 4))
    replay = sent(writer, batch(1, 4, name="replayed"))
    new = sent(writer, batch(4, 6))
    assert writer.finish(replay) == WriteResult(3, 0, fallback_used=False)
    assert writer.finish(new) == WriteResult(2, 0, fallback_used=False)
    rows = people(pg_conn, pg_schema)
    assert [(r[0], r[1]) for r in rows] == [(i, f"n{i}") for i in range(6)]


def test_a_connection_lost_with_two_statements_in_flight_writes_both_again(
    writer, pg_url, pg_conn, pg_schema
):
    backend = writer._conn.info.backend_pid  # the test looks inside: which session to end
    with psycopg.connect(pg_url) as blocker:
        blocker.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier(pg_schema, "people")
            )
        )
        first = sent(writer, batch(1, 4))
        second = sent(writer, batch(4, 7))
        deadline = time.monotonic() + 10
        while pg_conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [backend]
        ).fetchone() != ("Lock",):
            assert time.monotonic() < deadline, "the first statement never waited for the lock"
            time.sleep(0.01)
        pg_conn.execute("SELECT pg_terminate_backend(%s)", [backend])
        blocker.rollback()
    assert writer.finish(first) == WriteResult(3, 0, fallback_used=False)
    assert writer.finish(second) == WriteResult(3, 0, fallback_used=False)
    assert writer._conn.info.backend_pid != backend, "written again on a new connection"
    assert [r[0] for r in people(pg_conn, pg_schema)] == list(range(7))


def test_a_table_of_the_cast_form_sends_ahead_too(writer, pg_conn, pg_schema):
    """A domain column takes the cast form (json_to_recordset and a CAST per column)."""
    name_type = sql.Identifier(pg_schema, "name_t")
    pg_conn.execute(sql.SQL("CREATE DOMAIN {} AS text CHECK (VALUE <> 'bad')").format(name_type))
    pg_conn.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, name {})").format(
            sql.Identifier(pg_schema, "tagged"), name_type
        )
    )
    spec = TableSpec("tagged", PROPS, ["id"])
    writer.write(spec, KEYS, batch(0, 1))  # learns the table's columns
    bad = batch(1, 3)
    bad[0]["name"] = "bad"
    first = sent(writer, bad, spec)
    second = sent(writer, batch(3, 5), spec)
    assert (first.populate, second.populate) == (False, False)
    assert writer.finish(first) == WriteResult(1, 1, fallback_used=True)
    assert writer.finish(second) == WriteResult(2, 0, fallback_used=False)
    assert [r[0] for r in people(pg_conn, pg_schema, "tagged")] == [0, 2, 3, 4]


def test_batches_of_two_signatures_go_ahead_in_one_statement_over_both(writer, pg_conn, pg_schema):
    two = [(("id",), [{"id": 1}]), (KEYS, batch(2, 4))]
    first = writer.send(SPEC, two, [None, None])
    assert first is not None
    assert first.keys == ("id", "name")
    second = sent(writer, batch(4, 5))
    assert writer.finish(first) == WriteResult(3, 0, fallback_used=False)
    assert writer.finish(second) == WriteResult(1, 0, fallback_used=False)
    rows = people(pg_conn, pg_schema)
    assert [(r[0], r[1]) for r in rows] == [(0, "n0"), (1, None), (2, "n2"), (3, "n3"), (4, "n4")]
    assert rows[1][2] == rows[2][2], "one statement"
    # A left-out column with a default would get NULL instead: those go on their own.
    pg_conn.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, name text DEFAULT 'x')").format(
            sql.Identifier(pg_schema, "defaulted")
        )
    )
    spec = TableSpec("defaulted", PROPS, ["id"])
    writer.write(spec, KEYS, batch(0, 1))  # learns the table's columns and defaults
    assert writer.send(spec, two, [None, None]) is None
