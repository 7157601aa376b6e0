"""The singer-sdk standard target suite against a real PostgreSQL, plus data checks.

Most standard tests only assert "no exception"; `test_standard_stream_lands`
runs the same `.singer` files through the target and checks what is in the
database: every record is a row (the last per key, with `on_conflict: upsert`)
or a dead letter.
"""

from __future__ import annotations

import json
import uuid
from importlib import resources
from typing import Any

import psycopg
import pytest
from psycopg import sql
from singer_sdk.testing import get_target_test_class

from target_batched_postgres.identifiers import table_name_for_stream
from target_batched_postgres.target import TargetBatchedPostgres
from tests.conftest import session_servers
from tests.integration.target_helpers import run_target

CONFIG = {
    "database_url": session_servers().postgres.url,
    "default_target_schema": f"conformance_{uuid.uuid4().hex[:8]}",
    "on_conflict": "upsert",
}

TestTargetBatchedPostgres = get_target_test_class(TargetBatchedPostgres, config=CONFIG)

STREAMS = resources.files("singer_sdk.testing") / "target_test_streams"
# Files whose input the target must reject (the standard suite expects an error).
REJECTED = {"invalid_schema", "record_before_schema", "record_missing_key_property"}
LANDING = sorted(
    p.name.removesuffix(".singer")
    for p in STREAMS.iterdir()
    if p.name.endswith(".singer") and p.name.removesuffix(".singer") not in REJECTED
)


def expected_rows(lines: list[dict[str, Any]]) -> dict[str, int]:
    """Rows per table: one per key value (upsert) or one per record without a key."""
    keys: dict[str, list[str]] = {}
    seen: dict[str, set[Any]] = {}
    counts: dict[str, int] = {}
    for message in lines:
        stream = message.get("stream", "")
        table = table_name_for_stream(stream)
        if message["type"] == "SCHEMA":
            keys[table] = message.get("key_properties") or []
        elif message["type"] == "RECORD":
            record = message["record"]
            if keys.get(table):
                seen.setdefault(table, set()).add(tuple(record.get(k) for k in keys[table]))
                counts[table] = len(seen[table])
            else:
                counts[table] = counts.get(table, 0) + 1
    return counts


@pytest.mark.parametrize("name", LANDING)
def test_standard_stream_lands(
    name: str, pg_url: str, pg_conn: psycopg.Connection, pg_schema: str
) -> None:
    text = (STREAMS / f"{name}.singer").read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    messages = [json.loads(line) for line in lines]
    run_target(
        {"database_url": pg_url, "default_target_schema": pg_schema, "on_conflict": "upsert"}, lines
    )
    letters = pg_conn.execute(
        sql.SQL("SELECT table_name, count(*) FROM {} GROUP BY 1").format(
            sql.Identifier(pg_schema, "_dead_letters")
        )
    ).fetchall()
    dead: dict[str, int] = dict(letters)
    for table, count in expected_rows(messages).items():
        row = pg_conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, table))
        ).fetchone()
        assert row is not None
        assert row[0] + dead.get(table, 0) == count, table


def rows_of(conn: psycopg.Connection, schema: str, table: str, columns: str) -> list[tuple]:
    return conn.execute(
        sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
            sql.SQL(columns), sql.Identifier(schema, table)
        )
    ).fetchall()


def land(pg_url: str, schema: str, name: str) -> None:
    lines = [line for line in (STREAMS / f"{name}.singer").read_text().splitlines() if line.strip()]
    run_target(
        {"database_url": pg_url, "default_target_schema": schema, "on_conflict": "upsert"}, lines
    )


def test_duplicate_records_keep_the_last(pg_url, pg_conn, pg_schema):
    land(pg_url, pg_schema, "duplicate_records")
    assert rows_of(pg_conn, pg_schema, "test_duplicate_records", "id, metric") == [
        (1, 100),
        (2, 20),
    ]


def test_encoded_strings_land_or_are_dead_lettered(pg_url, pg_conn, pg_schema):
    land(pg_url, pg_schema, "encoded_string_data")
    strings = dict(rows_of(pg_conn, pg_schema, "test_strings", "id, info"))
    assert strings[3] == "简单的字串"
    assert strings[6] == 'various " \\ / \n escape sequences'
    assert strings[10] == "Double quoting: \\u0000 \\u0041 \\u0001"
    assert 11 not in strings  # a NUL byte: PostgreSQL text cannot hold it
    letters = rows_of(pg_conn, pg_schema, "_dead_letters", "table_name, payload->>'id', error")
    assert ("test_strings", "11") in {(t, i) for t, i, _ in letters}


def test_special_chars_and_arrays(pg_url, pg_conn, pg_schema):
    land(pg_url, pg_schema, "special_chars_in_attributes")
    assert rows_of(pg_conn, pg_schema, "test_specialchars_in_attributes", '"_id", d') == [
        ("a2e98886", {"env": "prod", "agent:type": "desktop", "agent:os:version": "10.13.1"})
    ]
    land(pg_url, pg_schema, "array_data")
    assert rows_of(pg_conn, pg_schema, "test_array_data", "id, fruits")[0] == (
        1,
        ["apple", "orange", "pear"],
    )


def test_schema_updates_add_columns(pg_url, pg_conn, pg_schema):
    land(pg_url, pg_schema, "schema_updates")
    columns = [
        c
        for (c,) in pg_conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
            " AND table_name = 'test_schema_updates' ORDER BY ordinal_position",
            (pg_schema,),
        )
    ]
    assert columns[:4] == ["id", "a1", "a2", "a3"]
    assert len(rows_of(pg_conn, pg_schema, "test_schema_updates", "id")) == 6
