"""Column-signature batching against a real PostgreSQL."""

from __future__ import annotations

import contextlib
import gc
import gzip
import io
import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from psycopg import sql
from singer_sdk.exceptions import MissingKeyPropertiesError

from target_batched_postgres.metrics import DrainerMetric
from target_batched_postgres.target import TargetBatchedPostgres
from tests.integration.target_helpers import (
    config,
    metric_totals,
    record_msg,
    rows,
    run_target,
    run_target_cli,
    schema_msg,
    start_target,
    state_msg,
    states_of,
)

PROPS = {
    "id": {"type": "integer"},
    "name": {"type": ["string", "null"]},
    "city": {"type": ["string", "null"]},
}


def alternating(n: int) -> list[str]:
    """Records whose key sets alternate A, B, A, B: signature A has `city`, B does not."""
    lines = []
    for i in range(n):
        if i % 2 == 0:
            lines.append(record_msg("people", {"id": i, "name": f"n{i}", "city": "x"}))
        else:
            lines.append(record_msg("people", {"id": i, "name": f"n{i}"}))
    return lines


def test_alternating_signatures_make_two_full_batches(pg_url, pg_schema, pg_conn):
    batch = 10
    run = run_target(
        config(pg_url, pg_schema, insert_batch_size=batch, max_batches_per_statement=1),
        [schema_msg("people", PROPS, ["id"]), *alternating(2 * batch)],
    )
    assert run.count(DrainerMetric.INSERT_STATEMENTS) == 2
    assert run.count(DrainerMetric.RECORDS_WRITTEN) == 2 * batch
    got = rows(pg_conn, pg_schema, "people")
    assert len(got) == 2 * batch
    assert got[0] == (0, "n0", "x")
    assert got[1] == (1, "n1", None)


def test_bucket_flushes_at_batch_size_and_end_of_input(pg_url, pg_schema, pg_conn):
    run = start_target(config(pg_url, pg_schema, insert_batch_size=3))
    run.feed([schema_msg("people", PROPS, ["id"])])
    run.feed(record_msg("people", {"id": i, "name": "a"}) for i in range(5))
    # 3 flushed as one statement at the batch size, 2 still waiting.
    assert run.count(DrainerMetric.INSERT_STATEMENTS) == 1
    assert len(rows(pg_conn, pg_schema, "people")) == 3
    run.finish()
    assert run.count(DrainerMetric.INSERT_STATEMENTS) == 2
    assert len(rows(pg_conn, pg_schema, "people")) == 5


def test_new_schema_does_not_flush_other_signatures(pg_url, pg_schema, pg_conn):
    # One statement per batch: the subject here is the buckets (sharing: further down).
    run = start_target(config(pg_url, pg_schema, insert_batch_size=4, max_batches_per_statement=1))
    run.feed(
        [
            schema_msg("people", PROPS, ["id"]),
            record_msg("people", {"id": 1, "name": "a"}),
            record_msg("people", {"id": 2, "name": "b", "city": "c"}),
            # A grown schema: the SDK retires the sink; our buckets stay open.
            schema_msg("people", {**PROPS, "age": {"type": ["integer", "null"]}}, ["id"]),
            record_msg("people", {"id": 3, "name": "c"}),
            record_msg("people", {"id": 4, "name": "d", "age": 40}),
        ]
    )
    assert run.count(DrainerMetric.INSERT_STATEMENTS) == 0
    run.feed(
        [record_msg("people", {"id": 5, "name": "e"}), record_msg("people", {"id": 6, "name": "f"})]
    )
    # The {id, name} bucket reached 4 across the schema change: one statement.
    assert run.count(DrainerMetric.INSERT_STATEMENTS) == 1
    run.finish()
    assert run.count(DrainerMetric.INSERT_STATEMENTS) == 3
    got = rows(pg_conn, pg_schema, "people")
    assert [r[0] for r in got] == [1, 2, 3, 4, 5, 6]
    assert got[3] == (4, "d", None, 40)  # the grown schema added the column


def test_bucket_flushes_by_age_when_a_state_arrives(pg_url, pg_schema, pg_conn):
    run = start_target(config(pg_url, pg_schema, max_batch_age_seconds=0.3))
    run.feed([schema_msg("people", PROPS, ["id"]), record_msg("people", {"id": 1, "name": "a"})])
    run.feed([state_msg({"at": 1})])
    assert rows(pg_conn, pg_schema, "people") == []
    assert run.states == []  # record 1 not durable yet
    time.sleep(1.2)
    # An idle tap's heartbeat STATE lets the target flush by age and checkpoint.
    run.feed([state_msg({"at": 2})])
    assert rows(pg_conn, pg_schema, "people") == [(1, "a", None)]
    assert run.states == [{"at": 2}]
    run.finish()


def test_state_is_emitted_only_when_earlier_records_are_durable(pg_url, pg_schema, pg_conn):
    run = start_target(config(pg_url, pg_schema, insert_batch_size=3))
    run.feed(
        [
            schema_msg("people", PROPS, ["id"]),
            state_msg({"n": 0}),  # nothing before it: emitted at once
            record_msg("people", {"id": 1, "name": "a"}),
            record_msg("people", {"id": 2, "name": "b", "city": "c"}),
            state_msg({"n": 2}),
            record_msg("people", {"id": 3, "name": "c"}),
            record_msg("people", {"id": 4, "name": "d"}),  # {id,name} bucket full: 1,3,4
        ]
    )
    # Record 2 ({id,name,city}) still waits, so {"n": 2} must not be emitted.
    assert run.states == [{"n": 0}]
    run.finish()
    assert run.states == [{"n": 0}, {"n": 2}]
    assert len(rows(pg_conn, pg_schema, "people")) == 4


def test_force_drain_record_is_written_at_once_and_alone(pg_url, pg_schema, pg_conn):
    run = start_target(config(pg_url, pg_schema, insert_batch_size=100))
    run.feed(
        [
            schema_msg("people", {**PROPS, "_sdc_force_drain": {"type": "boolean"}}, ["id"]),
            record_msg("people", {"id": 1, "name": "a"}),
            record_msg("people", {"id": 2, "name": "b", "_sdc_force_drain": True}),
            record_msg("people", {"id": 3, "name": "c", "_sdc_force_drain": False}),
        ]
    )
    # Only the forced record is in PostgreSQL; the bucket around it is still open.
    assert rows(pg_conn, pg_schema, "people") == [(2, "b", None)]
    assert run.count(DrainerMetric.INSERT_STATEMENTS) == 1
    run.finish()
    assert [r[0] for r in rows(pg_conn, pg_schema, "people")] == [1, 2, 3]
    assert run.count(DrainerMetric.INSERT_STATEMENTS) == 2


def test_batched_create_disabled_by_env_gives_one_statement_per_record(
    tmp_path: Path, pg_url, pg_schema, pg_conn
):
    lines = [schema_msg("people", PROPS, ["id"]), *alternating(12), state_msg({"done": True})]
    off = run_target_cli(
        tmp_path, config(pg_url, pg_schema), lines, env={"BATCHED_CREATE_ENABLED": "false"}
    )
    assert off.returncode == 0, off.stderr[-3000:]
    assert metric_totals(off.stderr)["insert_statements"] == 12
    assert states_of(off.stdout) == [{"done": True}]
    assert len(rows(pg_conn, pg_schema, "people")) == 12


def test_insert_batch_size_env_overrides_config(tmp_path: Path, pg_url, pg_schema, pg_conn):
    lines = [schema_msg("people", PROPS, ["id"])]
    lines += [record_msg("people", {"id": i, "name": "a"}) for i in range(20)]
    result = run_target_cli(
        tmp_path,
        config(pg_url, pg_schema, insert_batch_size=100, max_batches_per_statement=1),
        lines,
        env={"INSERT_BATCH_SIZE": "7"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert metric_totals(result.stderr)["insert_statements"] == 3  # 7 + 7 + 6
    assert len(rows(pg_conn, pg_schema, "people")) == 20


def test_schema_variation_alert(pg_url, pg_schema):
    lines = [schema_msg("wide", {"id": {"type": "integer"}}, ["id"])]
    for i, extra in enumerate(["a", "b", "c", "d"]):
        lines.append(record_msg("wide", {"id": i, extra: "v"}))
    run = run_target(config(pg_url, pg_schema, schema_variation_threshold=3), lines)
    assert run.count(DrainerMetric.SCHEMA_VARIATION_ALERT) == 1


def test_existing_table_column_types_are_respected(pg_url, pg_schema, pg_conn):
    table = sql.Identifier(pg_schema, "typed")
    pg_conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id uuid PRIMARY KEY, n integer, ok boolean, tags text[],"
            " at timestamptz, doc jsonb, amount numeric(10,2), label text DEFAULT 'dflt')"
        ).format(table)
    )
    props: dict[str, dict] = {k: {} for k in ("id", "n", "ok", "tags", "at", "doc", "amount")}
    record = {
        "id": "9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3",
        "n": "850",
        "ok": "True",
        "tags": ["a", 'b"q', None, "c,d"],
        "at": "2024-06-01 10:15:30.123456 UTC",
        "doc": '{"k": [1, 2]}',
        "amount": 12.345,
    }
    run_target(
        config(pg_url, pg_schema), [schema_msg("typed", props, ["id"]), record_msg("typed", record)]
    )
    got = pg_conn.execute(
        sql.SQL("SELECT id::text, n, ok, tags, at::text, doc, amount, label FROM {}").format(table)
    ).fetchall()
    assert got == [
        (
            "9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3",
            850,
            True,
            ["a", 'b"q', None, "c,d"],
            "2024-06-01 10:15:30.123456+00",
            {"k": [1, 2]},
            Decimal("12.35"),
            "dflt",  # absent from the record: the column default applies
        )
    ]


def test_created_table_types_follow_the_schema(pg_url, pg_schema, pg_conn):
    props = {
        "id": {"type": "integer"},
        "price": {"type": "number"},
        "ok": {"type": ["boolean", "null"]},
        "at": {"type": "string", "format": "date-time"},
        "day": {"type": "string", "format": "date"},
        "meta": {"type": "object"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "label": {"type": "string"},
    }
    record = {
        "id": 1,
        "price": 1.5,
        "ok": True,
        "at": "2024-06-01T10:15:30+00:00",
        "day": "2024-06-01",
        "meta": {"a": 1},
        "tags": ["x"],
        "label": "l",
    }
    run_target(
        config(pg_url, pg_schema), [schema_msg("typed", props, ["id"]), record_msg("typed", record)]
    )
    types = dict(
        pg_conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'typed'",
            (pg_schema,),
        ).fetchall()
    )
    assert types == {
        "id": "bigint",
        "price": "numeric",
        "ok": "boolean",
        "at": "timestamp with time zone",
        "day": "date",
        "meta": "jsonb",
        "tags": "jsonb",
        "label": "text",
    }
    pk = pg_conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary",
        (f'"{pg_schema}"."typed"',),
    ).fetchall()
    assert pk == [("id",)]


def test_array_columns_flat_nested_null_elements_and_literals(pg_url, pg_schema, pg_conn):
    """Flat lists travel as JSON arrays, nested ones as array literals: same rows either way."""
    pg_conn.execute(
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, tags text[], grid bigint[])").format(
            sql.Identifier(pg_schema, "arrays")
        )
    )
    props = {
        "id": {"type": "integer"},
        "tags": {"type": ["array", "string", "null"]},
        "grid": {"type": ["array", "null"]},
    }
    records = [
        {"id": 1, "tags": ['quote"d', "com,ma", "back\\slash", None, ""], "grid": [1, 2]},
        {"id": 2, "tags": ["{braces}", "NULL"], "grid": [[1, 2], [3, 4]]},  # nested: literal
        {"id": 3, "tags": "{x,y}", "grid": None},  # already an array literal
        {"id": 4, "tags": [], "grid": []},
    ]
    lines = [schema_msg("arrays", props, ["id"])] + [record_msg("arrays", r) for r in records]
    for batch_size in (1, 4):  # alone (the flat path) and together (the nested path for all)
        pg_conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(pg_schema, "arrays")))
        run_target(config(pg_url, pg_schema, insert_batch_size=batch_size), lines)
        got = pg_conn.execute(
            sql.SQL("SELECT id, tags, grid FROM {} ORDER BY id").format(
                sql.Identifier(pg_schema, "arrays")
            )
        ).fetchall()
        assert got == [
            (1, ['quote"d', "com,ma", "back\\slash", None, ""], [1, 2]),
            (2, ["{braces}", "NULL"], [[1, 2], [3, 4]]),
            (3, ["x", "y"], None),
            (4, [], []),
        ], batch_size


def test_sdk_metadata_columns_dropped_unless_asked_for(pg_url, pg_schema, pg_conn):
    """The direct record path drops `_sdc_*` metadata as the SDK would; asked for, it lands."""
    extracted = "2024-06-01T00:00:00+00:00"
    props = {**PROPS, "_sdc_extracted_at": {"type": ["string", "null"], "format": "date-time"}}
    for stream, extra in (("plain", {}), ("with_meta", {"add_record_metadata": True})):
        lines = [schema_msg(stream, props, ["id"])]
        lines += [
            record_msg(stream, {"id": i, "name": "n", "_sdc_extracted_at": extracted})
            for i in (1, 2)
        ]
        run_target(config(pg_url, pg_schema, **extra), lines)
    columns = {
        table: {
            name
            for (name,) in pg_conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s",
                (pg_schema, table),
            )
        }
        for table in ("plain", "with_meta")
    }
    assert "_sdc_extracted_at" not in columns["plain"]
    assert "_sdc_extracted_at" in columns["with_meta"]
    assert [r[0] for r in rows(pg_conn, pg_schema, "plain")] == [1, 2]


def _slow_inserts(conn, schema: str, table: str, seconds: float) -> None:
    """Every INSERT statement into the table takes at least `seconds`: PostgreSQL falls behind."""
    conn.execute(
        sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, name text)").format(
            sql.Identifier(schema, table)
        )
    )
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM pg_sleep({}); RETURN NULL; END$$"
        ).format(sql.Identifier(schema, "slow"), sql.Literal(seconds))
    )
    conn.execute(
        sql.SQL("CREATE TRIGGER slow BEFORE INSERT ON {} EXECUTE FUNCTION {}()").format(
            sql.Identifier(schema, table), sql.Identifier(schema, "slow")
        )
    )


def _people_on_a_slow_table(
    pg_url, pg_schema, pg_conn, records: int, seconds: float, max_batches: int
):
    """`records` people in batches of 10 into a table whose inserts take `seconds` each."""
    _slow_inserts(pg_conn, pg_schema, "people", seconds)
    lines = [schema_msg("people", PROPS, ["id"])]
    lines += [record_msg("people", {"id": i, "name": f"n{i}"}) for i in range(records)]
    cfg = config(pg_url, pg_schema, insert_batch_size=10, max_batches_per_statement=max_batches)
    return run_target(cfg, lines)


def test_batches_waiting_for_postgres_share_statements(pg_url, pg_schema, pg_conn):
    run = _people_on_a_slow_table(pg_url, pg_schema, pg_conn, 200, 0.05, max_batches=4)
    statements = run.count(DrainerMetric.INSERT_STATEMENTS)
    assert 200 // (10 * 4) <= statements < 200 // 10  # up to 4 batches per statement
    got = rows(pg_conn, pg_schema, "people")
    assert [r[0] for r in got] == list(range(200))


def test_tables_arriving_interleaved_each_share_statements(pg_url, pg_schema, pg_conn):
    """Batches of two tables alternate in the queue; each table's still share statements."""
    lines = []
    for table in ("people", "pets"):
        _slow_inserts(pg_conn, pg_schema, table, 0.05)
        lines.append(schema_msg(table, PROPS, ["id"]))
    for i in range(200):
        lines.append(record_msg("people", {"id": i, "name": f"n{i}"}))
        lines.append(record_msg("pets", {"id": i, "name": f"p{i}"}))
    cfg = config(pg_url, pg_schema, insert_batch_size=10, max_batches_per_statement=4)
    run = run_target(cfg, lines)
    assert run.count(DrainerMetric.INSERT_STATEMENTS) < 30  # 40 batches
    for table in ("people", "pets"):
        assert [r[0] for r in rows(pg_conn, pg_schema, table)] == list(range(200))


def test_max_batches_per_statement_1_keeps_one_statement_per_batch(pg_url, pg_schema, pg_conn):
    run = _people_on_a_slow_table(pg_url, pg_schema, pg_conn, 100, 0.02, max_batches=1)
    assert run.count(DrainerMetric.INSERT_STATEMENTS) == 10
    assert len(rows(pg_conn, pg_schema, "people")) == 100


def _alternating_on_a_slow_table(pg_url, pg_schema, pg_conn, columns: str, **settings):
    """200 records of signatures A (with city) and B (without), interleaved, batches of 10."""
    _slow_inserts(pg_conn, pg_schema, "people", 0.05)
    pg_conn.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN city {}").format(
            sql.Identifier(pg_schema, "people"), sql.SQL(columns)
        )
    )
    lines = [schema_msg("people", PROPS, ["id"]), *alternating(200)]
    return run_target(config(pg_url, pg_schema, insert_batch_size=10, **settings), lines)


def test_waiting_batches_of_two_signatures_share_statements(pg_url, pg_schema, pg_conn):
    run = _alternating_on_a_slow_table(pg_url, pg_schema, pg_conn, "text")
    assert run.count(DrainerMetric.INSERT_STATEMENTS) < 20  # 20 batches
    got = rows(pg_conn, pg_schema, "people")
    assert [(r[0], r[2]) for r in got] == [(i, None if i % 2 else "x") for i in range(200)]


def test_a_column_with_a_default_keeps_signatures_apart(pg_url, pg_schema, pg_conn):
    # Left out, city gets its default; written as NULL it would not: no sharing.
    run = _alternating_on_a_slow_table(pg_url, pg_schema, pg_conn, "text DEFAULT 'home'")
    got = rows(pg_conn, pg_schema, "people")
    assert [(r[0], r[2]) for r in got] == [(i, "home" if i % 2 else "x") for i in range(200)]
    assert run.count(DrainerMetric.INSERT_STATEMENTS) >= 20


def test_upserts_keep_signatures_apart(pg_url, pg_schema, pg_conn):
    run = _alternating_on_a_slow_table(pg_url, pg_schema, pg_conn, "text", on_conflict="upsert")
    assert run.count(DrainerMetric.INSERT_STATEMENTS) >= 20
    # Upserts of the same ids with new names: a B record must leave the row's city as it was.
    again = [schema_msg("people", PROPS, ["id"])]
    for i in range(200):
        record = {"id": i, "name": f"m{i}"} if i % 2 else {"id": i, "name": f"m{i}", "city": "y"}
        again.append(record_msg("people", record))
    pg_conn.execute(
        sql.SQL("UPDATE {} SET city = 'kept'").format(sql.Identifier(pg_schema, "people"))
    )
    run_target(config(pg_url, pg_schema, insert_batch_size=10, on_conflict="upsert"), again)
    got = rows(pg_conn, pg_schema, "people")
    assert [(r[0], r[1], r[2]) for r in got] == [
        (i, f"m{i}", "kept" if i % 2 else "y") for i in range(200)
    ]


def _batch_msg(stream: str, files: list[Path], compression: str) -> str:
    return json.dumps(
        {
            "type": "BATCH",
            "stream": stream,
            "encoding": {"format": "jsonl", "compression": compression},
            "manifest": [path.as_uri() for path in files],
        }
    )


def test_batch_messages_are_bucketed_like_records(tmp_path, pg_url, pg_schema, pg_conn):
    """A tap with `batch_config` sends BATCH messages (JSONL files, gzip or not):
    their records take the RECORD path (buckets, force drain, dead letters), and a
    STATE after them waits until they are durable."""
    gz = tmp_path / "part-1.json.gz"
    with gzip.open(gz, "wt") as out:
        out.writelines(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in range(1, 5))
    plain = tmp_path / "part-2.json"
    plain.write_text(
        json.dumps({"id": 5, "name": "forced", "_sdc_force_drain": True})
        + "\n"
        + json.dumps({"id": "not a number", "name": "bad"})
        + "\n"
        + json.dumps({"id": 6, "name": "n6", "city": "c"})
        + "\n"
    )
    schema = {**PROPS, "_sdc_force_drain": {"type": "boolean"}}
    run = start_target(config(pg_url, pg_schema, insert_batch_size=100))
    run.feed([schema_msg("people", schema, ["id"]), _batch_msg("people", [gz], "gzip")])
    run.feed([state_msg({"after": 1}), _batch_msg("people", [plain], "none")])
    # The forced record went at once and alone; the other records wait in buckets,
    # and so does the STATE that follows them.
    assert rows(pg_conn, pg_schema, "people") == [(5, "forced", None)]
    assert run.states == []
    run.feed([state_msg({"after": 2})])
    run.finish()
    assert sorted(rows(pg_conn, pg_schema, "people")) == [
        (1, "n1", None), (2, "n2", None), (3, "n3", None), (4, "n4", None),
        (5, "forced", None), (6, "n6", "c"),
    ]  # fmt: skip
    assert run.states == [{"after": 2}]
    letters = pg_conn.execute(
        sql.SQL("SELECT payload->>'name' FROM {}").format(
            sql.Identifier(pg_schema, "_dead_letters")
        )
    ).fetchall()
    assert letters == [("bad",)]
    assert run.count(DrainerMetric.RECORDS_WRITTEN) == 6


def test_a_record_without_its_key_property_is_refused_with_the_sdk_error(pg_url, pg_schema):
    run = start_target(config(pg_url, pg_schema))
    lines = [schema_msg("people", PROPS, ["id"]), record_msg("people", {"id": 1, "name": "a"})]
    run.feed(lines)
    with pytest.raises(MissingKeyPropertiesError, match="missing one or more key_properties"):
        run.feed([record_msg("people", {"name": "no id"})])


def test_an_in_process_run_leaves_the_garbage_collector_as_it_was(pg_url, pg_schema, pg_conn):
    """Only the command line tunes the collector (startup objects frozen, fewer
    collections): a target run inside another program leaves that program's as it was."""
    before = (gc.get_threshold(), gc.get_freeze_count())
    lines = [schema_msg("people", PROPS, ["id"]), record_msg("people", {"id": 1, "name": "a"})]
    target = TargetBatchedPostgres(config=config(pg_url, pg_schema))
    with contextlib.redirect_stdout(io.StringIO()):
        target.listen(io.StringIO("\n".join(lines) + "\n"))
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    assert [r[0] for r in rows(pg_conn, pg_schema, "people")] == [1]
