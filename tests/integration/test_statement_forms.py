"""The batch INSERT's two forms write the same rows.

Batches of built-in column types go through `json_populate_recordset`
(`build_populate_insert`); other tables, and batches with a json column
string that holds no JSON, through `json_to_recordset` with casts
(`build_insert`), the form that mirrors the old drainer's literals. Each
test writes records through the target and the same records, one by one,
through `build_insert` into a twin table, and compares the two as text.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any, cast

import psycopg
import pytest
from psycopg import sql

from target_batched_postgres import postgres_writer
from target_batched_postgres.pgtypes import ColumnType
from target_batched_postgres.postgres_writer import PostgresWriter, RowEncoder
from target_batched_postgres.reader import decode_line
from target_batched_postgres.sql import COLUMNS_QUERY, build_insert
from target_batched_postgres.target import TargetBatchedPostgres
from tests.integration.target_helpers import config, record_msg, run_target, schema_msg

BUILTIN_COLUMNS = (
    "id int PRIMARY KEY, t text, n numeric, b bool, j jsonb, js json,"
    " arr text[], grid int[], ts timestamptz"
)
NAMES = ["id", "t", "n", "b", "j", "js", "arr", "grid", "ts"]

# Each value as the target reads it (JSON numbers become Decimals).
GOOD = [
    {"id": 1, "t": True, "n": "1.50", "b": "true", "j": {"a": [1, 2]}, "js": {"b": [2]},
     "arr": ["a", None, "b,c", 'q"uote', "back\\slash"], "grid": [[1, 2], [3, 4]],
     "ts": "2024-01-02T03:04:05Z"},
    {"id": 2, "t": 12.5, "n": 7, "b": False, "j": '{"a": 1}', "js": {"k": "v"}, "arr": "{x,y}",
     "grid": [5], "ts": "2024-01-02 03:04:05+02"},
    {"id": 3, "t": {"o": 1}, "n": "-0.0", "b": None, "j": '"str"', "js": [1, 2], "arr": [],
     "grid": None, "ts": None},
    {"id": 4, "t": [1, "x"], "n": 1e3, "b": "yes", "j": 5, "js": 5,
     "arr": [["a", "b"], ["c", "d"]], "grid": [[1], [2]], "ts": "2024-01-02"},
    {"id": 5, "t": "plain", "n": None, "b": True, "j": None, "js": None, "arr": ["1"],
     "grid": [None, 3], "ts": "2024-06-30T23:59:59.123456+05:30"},
]  # fmt: skip
BAD = [
    {"id": 10, "j": "not json"},
    {"id": 11, "arr": {"x": 1}},
    {"id": 12, "grid": [[1, 2], [3]]},
    {"id": 13, "n": "abc"},
    {"id": 14, "j": '{"a": 1} trailing'},
]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text of every batch statement the writer executes or sends in pipeline mode."""
    seen: list[str] = []
    execute = PostgresWriter._execute
    pipelined = postgres_writer.InsertPlan.pipelined

    def recording(self: PostgresWriter, statement: Any, params: Any = None) -> int:
        seen.append(repr(statement))
        return execute(self, statement, params)

    def recording_sent(
        self: postgres_writer.InsertPlan, populate: bool, plain: bool, conn: Any
    ) -> bytes:
        seen.append(repr(self.statements[(populate, plain)]))
        return pipelined(self, populate, plain, conn)

    monkeypatch.setattr(postgres_writer.PostgresWriter, "_execute", recording)
    monkeypatch.setattr(postgres_writer.InsertPlan, "pipelined", recording_sent)
    return seen


def _create(conn: psycopg.Connection, schema: str, table: str, columns: str) -> None:
    conn.execute(
        sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(schema, table), sql.SQL(columns))
    )


def _types(conn: psycopg.Connection, schema: str, table: str) -> dict[str, ColumnType]:
    return {
        name: ColumnType.from_catalog(nsp, typ, cat)
        for name, nsp, typ, cat, _ in conn.execute(COLUMNS_QUERY, (schema, table))
    }


def _full(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record.get(name) for name in NAMES}


def _through_target(pg_url: str, schema: str, table: str, records: Sequence[dict]) -> None:
    properties: dict[str, Any] = {name: {} for name in NAMES}
    lines = [schema_msg(table, properties, ["id"]), *(record_msg(table, r) for r in records)]
    run_target(config(pg_url, schema, insert_batch_size=100), lines)


def _through_casts(conn: psycopg.Connection, schema: str, twin: str, lines: Sequence[str]) -> None:
    """The same records, one statement each, in the json_to_recordset form."""
    types = _types(conn, schema, twin)
    statement = build_insert(schema, twin, NAMES, [types[n] for n in NAMES])
    encode = RowEncoder(NAMES, NAMES, [types[n] for n in NAMES])
    for line in lines:
        record = decode_line(line)["record"]
        # A row PostgreSQL refuses: the target dead-letters it, the twin leaves it out.
        with contextlib.suppress(psycopg.DataError):
            conn.execute(statement, [encode([record])])


def _as_text(conn: psycopg.Connection, schema: str, table: str) -> list[tuple]:
    columns = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n in NAMES)
    query = sql.SQL("SELECT {} FROM {} ORDER BY id").format(columns, sql.Identifier(schema, table))
    return conn.execute(query).fetchall()


def _compare(
    pg_url: str, pg_conn: psycopg.Connection, schema: str, columns: str, records: list[dict]
) -> list[tuple]:
    for table in ("written", "twin"):
        _create(pg_conn, schema, table, columns)
    full = [_full(r) for r in records]
    _through_target(pg_url, schema, "written", full)
    _through_casts(pg_conn, schema, "twin", [record_msg("twin", r) for r in full])
    written = _as_text(pg_conn, schema, "written")
    assert written == _as_text(pg_conn, schema, "twin")
    return written


def test_populate_form_writes_what_the_casts_write(pg_url, pg_conn, pg_schema, spy):
    written = _compare(pg_url, pg_conn, pg_schema, BUILTIN_COLUMNS, GOOD)
    assert [row[0] for row in written] == ["1", "2", "3", "4", "5"]
    batch = [s for s in spy if "INSERT INTO" in s and "written" in s]
    assert len(batch) == 1
    assert "json_populate_recordset" in batch[0]
    by_id = {row[0]: row for row in written}
    assert by_id["1"][1] == "true"
    assert by_id["2"][4] == '{"a": 1}'  # a jsonb column's string: the JSON it holds
    assert by_id["3"][4] == '"str"'
    assert by_id["4"][6] == "{{a,b},{c,d}}"
    assert by_id["1"][7] == "{{1,2},{3,4}}"
    assert by_id["4"][2] == "1000.0"  # the number's own digits, as the casts read them


def test_batches_are_encoded_ahead_on_the_main_thread(pg_url, pg_conn, pg_schema, monkeypatch):
    """After a signature's first write, the thread that forms a batch encodes it, and the
    writer thread sends that parameter: the rows are the ones the casts write."""
    threads: list[str] = []
    populate = RowEncoder.populate

    def recording(self: RowEncoder, rows: Any) -> Any:
        threads.append(threading.current_thread().name)
        return populate(self, rows)

    monkeypatch.setattr(postgres_writer.RowEncoder, "populate", recording)
    submit = TargetBatchedPostgres._submit_flush

    def submit_and_wait(self: TargetBatchedPostgres, *args: Any, **kwargs: Any) -> None:
        submit(self, *args, **kwargs)
        self.pipeline.wait()  # each batch formed after the one before was written

    monkeypatch.setattr(TargetBatchedPostgres, "_submit_flush", submit_and_wait)
    for table in ("written", "twin"):
        _create(pg_conn, pg_schema, table, BUILTIN_COLUMNS)
    full = [_full({**r, "id": cast(int, r["id"]) + 10 * n}) for n in range(4) for r in GOOD]
    properties: dict[str, Any] = {name: {} for name in NAMES}
    lines = [schema_msg("written", properties, ["id"]), *(record_msg("written", r) for r in full)]
    run_target(config(pg_url, pg_schema, insert_batch_size=3), lines)
    _through_casts(pg_conn, pg_schema, "twin", [record_msg("twin", r) for r in full])
    written = _as_text(pg_conn, pg_schema, "written")
    assert len(written) == len(full)
    assert written == _as_text(pg_conn, pg_schema, "twin")
    # No plan yet for the first batch: the writer thread encodes it; then the
    # main thread encodes each batch and the writer thread sends it as it is.
    main = threading.main_thread().name
    assert threads == ["drainer-postgres"] + [main] * 6


def test_rows_either_form_refuses_are_dead_lettered_and_the_rest_written(
    pg_url, pg_conn, pg_schema
):
    records = [GOOD[0], *BAD, GOOD[1]]
    written = _compare(pg_url, pg_conn, pg_schema, BUILTIN_COLUMNS, records)
    assert [row[0] for row in written] == ["1", "2"]
    letters = pg_conn.execute(
        sql.SQL("SELECT payload->>'id' FROM {} ORDER BY 1").format(
            sql.Identifier(pg_schema, "_dead_letters")
        )
    ).fetchall()
    assert sorted(int(r[0]) for r in letters) == [r["id"] for r in BAD]


def test_a_domain_column_keeps_the_cast_form(pg_url, pg_conn, pg_schema, spy):
    pg_conn.execute(sql.SQL("CREATE DOMAIN {} AS jsonb").format(sql.Identifier(pg_schema, "doc")))
    columns = BUILTIN_COLUMNS.replace("j jsonb", f'j "{pg_schema}".doc')
    written = _compare(pg_url, pg_conn, pg_schema, columns, GOOD)
    assert {row[0]: row[4] for row in written}["2"] == '{"a": 1}'  # parsed, not a JSON string
    batch = [s for s in spy if "INSERT INTO" in s and "written" in s]
    assert batch
    assert all("json_populate_recordset" not in s for s in batch)


def test_control_properties_named_like_columns_are_not_read(pg_url, pg_conn, pg_schema):
    _create(pg_conn, pg_schema, "events", "id int PRIMARY KEY, _sdc_source_entry_id bigint")
    record = {"id": 1, "_sdc_source_entry_id": "1700000000000-0", "_sdc_source_stream": "s"}
    lines = [
        schema_msg("events", {"id": {"type": "integer"}}, ["id"]),
        record_msg("events", record),
    ]
    run_target(config(pg_url, pg_schema), lines)
    got = pg_conn.execute(
        sql.SQL("SELECT id, _sdc_source_entry_id FROM {}").format(
            sql.Identifier(pg_schema, "events")
        )
    ).fetchall()
    assert got == [(1, None)]


def test_a_json_column_string_keeps_its_text_through_the_cast_form(pg_url, pg_conn, pg_schema, spy):
    records = [{**GOOD[0], "js": ' {"b": 2} '}, {**GOOD[1], "js": "null"}]
    written = _compare(pg_url, pg_conn, pg_schema, BUILTIN_COLUMNS, records)
    assert [row[5] for row in written] == [' {"b": 2} ', "null"]
    batch = [s for s in spy if "INSERT INTO" in s and "written" in s]
    assert batch
    assert all("json_populate_recordset" not in s for s in batch)


def test_batches_go_without_on_conflict_until_one_meets_a_key(pg_url, pg_conn, pg_schema, spy):
    _create(pg_conn, pg_schema, "people", "id int PRIMARY KEY, name text")
    pg_conn.execute(
        sql.SQL("INSERT INTO {} SELECT i, 'old' FROM generate_series(0, 4) AS i").format(
            sql.Identifier(pg_schema, "people")
        )
    )
    lines = [schema_msg("people", {"id": {"type": "integer"}, "name": {}}, ["id"])]
    lines += [record_msg("people", {"id": i, "name": "new"}) for i in range(40)]
    # One statement at a time: which go with the clause then does not depend on timing.
    cfg = config(
        pg_url,
        pg_schema,
        insert_batch_size=10,
        max_batches_per_statement=1,
        max_statements_in_flight=1,
    )
    run_target(cfg, lines)
    inserts = [s for s in spy if "INSERT INTO" in s and "people" in s]
    with_clause = ["ON CONFLICT" in s for s in inserts]
    # Batch 1 meets ids 0-4: tried without the clause, then with it; batch 2 goes with
    # it straight away (backoff); batches 3 and 4, without it again.
    assert with_clause == [False, True, True, False, False]
    got = pg_conn.execute(
        sql.SQL("SELECT id, name FROM {} ORDER BY id").format(sql.Identifier(pg_schema, "people"))
    ).fetchall()
    assert got == [(i, "old" if i < 5 else "new") for i in range(40)]
