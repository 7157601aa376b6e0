"""The SDK's per-record path (stream maps, flattening, record metadata, validation),
BATCH messages and age-based flushing, against a real PostgreSQL (and Kafka)."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from target_batched_postgres.metrics import DrainerMetric
from tests.integration.target_helpers import (
    TARGET_BIN,
    config,
    consume,
    record_msg,
    rows,
    run_target,
    schema_msg,
    state_msg,
    write_config,
)

CONTROL = {
    "_sdc_operation": {"type": "string"},
    "_sdc_where": {"type": ["object", "null"]},
    "_sdc_model": {"type": ["object", "null"]},
    "_sdc_force_drain": {"type": "boolean"},
    "_sdc_source_stream": {"type": "string"},
    "_sdc_source_entry_id": {"type": "string"},
}
PROPS = {"id": {"type": "integer"}, "name": {"type": ["string", "null"]}, **CONTROL}


def eq(column: str, value: Any) -> dict[str, Any]:
    return {"column": column, "op": "=", "value": value}


def source(i: int) -> dict[str, str]:
    return {"_sdc_source_stream": "k", "_sdc_source_entry_id": f"1-{i}"}


def dead_letters(conn: psycopg.Connection, schema: str) -> list[tuple]:
    exists = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, '_dead_letters'))", (schema,)
    ).fetchone()
    if exists is None or exists[0] is None:
        return []
    query = sql.SQL("SELECT payload, error FROM {} ORDER BY id").format(
        sql.Identifier(schema, "_dead_letters")
    )
    return conn.execute(query).fetchall()


def columns(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, table),
        ).fetchall()
    ]


# -- fix: control properties pass stream maps and flattening untouched ------------


def test_flattening_leaves_changes_structured(pg_url, pg_schema, pg_conn):
    props = {
        **PROPS,
        "address": {"type": ["object", "null"], "properties": {"city": {"type": "string"}}},
    }
    lines = [
        schema_msg("t", props, ["id"]),
        record_msg("t", {"id": 1, "name": "a", "address": {"city": "x"}, **source(1)}),
        record_msg("t", {"id": 2, "name": "b", "address": {"city": "y"}, **source(2)}),
        record_msg(
            "t",
            {
                "name": "A",
                "_sdc_operation": "update",
                "_sdc_where": eq("id", 1),
                "_sdc_model": {"id": 1, "name": "A", "address": {"city": "x"}},
                **source(3),
            },
        ),
        record_msg("t", {"_sdc_operation": "delete", "_sdc_where": eq("id", 2), **source(4)}),
    ]
    cfg = config(pg_url, pg_schema, flattening_enabled=True, flattening_max_depth=1)
    run = run_target(cfg, lines)
    assert dead_letters(pg_conn, pg_schema) == []
    assert columns(pg_conn, pg_schema, "t") == ["id", "name", "address__city"]  # data flattened
    assert rows(pg_conn, pg_schema, "t") == [(1, "A", "x")]
    assert run.count(DrainerMetric.UPDATES_APPLIED) == 1


def test_a_whitelisting_map_keeps_an_update_an_update(pg_url, pg_schema, pg_conn):
    props = {**PROPS, "secret": {"type": ["string", "null"]}}
    lines = [
        schema_msg("t", props, ["id"]),
        record_msg("t", {"id": 1, "name": "a", "secret": "x"}),
        record_msg("t", {"id": 2, "name": "b", "secret": "y"}),
        record_msg(
            "t", {"id": 1, "name": "A", "_sdc_operation": "update", "_sdc_where": eq("id", 1)}
        ),
        # The map's expressions run on a change's columns too: this one names both.
        record_msg(
            "t",
            {
                "id": 2,
                "name": "b",
                "secret": "z",
                "_sdc_operation": "delete",
                "_sdc_where": eq("id", 2),
            },
        ),
    ]
    maps = {"t": {"__else__": None, "id": "id", "name": "name"}}
    run = run_target(config(pg_url, pg_schema, stream_maps=maps), lines)
    assert columns(pg_conn, pg_schema, "t") == ["id", "name"]
    assert rows(pg_conn, pg_schema, "t") == [(1, "A")]
    assert run.count(DrainerMetric.UPDATES_APPLIED) == 1
    assert dead_letters(pg_conn, pg_schema) == []


def test_kafka_gets_the_model_and_date_times_as_sent_on_the_sdk_path(
    pg_url, pg_schema, pg_conn, kafka_bootstrap, unique
):
    props = {**PROPS, "ts": {"type": ["string", "null"], "format": "date-time"}}
    model = {"id": 1, "name": "A", "ts": "2024-01-02 03:04:05", "nested": {"k": 1}}
    lines = [
        schema_msg("t", props, ["id"]),
        record_msg("t", {"id": 1, "name": "a", "ts": "2024-01-02 03:04:05", **source(1)}),
        record_msg(
            "t",
            {
                "name": "A",
                "_sdc_operation": "update",
                "_sdc_where": eq("id", 1),
                "_sdc_model": model,
                **source(2),
            },
        ),
    ]
    cfg = config(
        pg_url,
        pg_schema,
        flattening_enabled=True,
        flattening_max_depth=1,
        validate_records=True,
        kafka_enabled=True,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_template=f"{{table}}-{unique}",
    )
    run_target(cfg, lines)
    messages = consume(kafka_bootstrap, f"t-{unique}", expected=2)
    values = [json.loads(m.value() or b"null") for m in messages]
    assert values == [{"id": 1, "name": "a", "ts": "2024-01-02 03:04:05"}, model]
    assert rows(pg_conn, pg_schema, "t")[0][:2] == (1, "A")


# -- fix: an unparsable date-time is dead-lettered, not fatal, on the SDK path -----


@pytest.mark.parametrize(
    "extra",
    [{"add_record_metadata": True}, {"validate_records": True}],
    ids=["add_record_metadata", "validate_records"],
)
def test_a_bad_date_time_is_dead_lettered_on_the_sdk_path(pg_url, pg_schema, pg_conn, extra):
    props = {**PROPS, "ts": {"type": ["string", "null"], "format": "date-time"}}
    lines = [
        schema_msg("t", props, ["id"]),
        record_msg("t", {"id": 1, "name": "a", "ts": "2024-01-02T03:04:05+00:00", **source(1)}),
        record_msg("t", {"id": 2, "name": "b", "ts": "2024-13-45T99:00:00", **source(2)}),
        record_msg("t", {"id": 3, "name": "c", "ts": None, **source(3)}),
        state_msg({"n": 3}),
    ]
    run = run_target(config(pg_url, pg_schema, **extra), lines)
    assert [r[:2] for r in rows(pg_conn, pg_schema, "t")] == [(1, "a"), (3, "c")]
    letters = dead_letters(pg_conn, pg_schema)
    assert [(payload["id"], payload["ts"]) for payload, _ in letters] == [
        (2, "2024-13-45T99:00:00")
    ]
    assert run.states == [{"n": 3}]


# -- fix: BATCH records lose the SDK's metadata keys as RECORDs do ----------------


def test_batch_records_drop_sdk_metadata_but_keep_control_properties(
    tmp_path: Path, pg_url, pg_schema, pg_conn
):
    metadata = {
        "_sdc_extracted_at": "2024-01-01T00:00:00Z",
        "_sdc_batched_at": "2024-01-01T00:00:00Z",
        "_sdc_received_at": "2024-01-01T00:00:00Z",
        "_sdc_deleted_at": None,
        "_sdc_sequence": 1,
        "_sdc_table_version": 1,
        "_sdc_sync_started_at": 1,
    }
    records = [
        {"id": 1, "name": "a", **metadata, **source(1)},
        {"id": 2, "name": "b", **metadata, **source(2)},
        {"name": "B", "_sdc_operation": "update", "_sdc_where": eq("id", 2), **metadata},
        {"id": 3, "name": "c", "_sdc_force_drain": True, **metadata},
    ]
    path = tmp_path / "part-1.jsonl.gz"
    with gzip.open(path, "wt") as out:
        out.writelines(json.dumps(r) + "\n" for r in records)
    batch = {
        "type": "BATCH",
        "stream": "t",
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "manifest": [path.as_uri()],
    }
    run = run_target(config(pg_url, pg_schema), [schema_msg("t", PROPS, ["id"]), json.dumps(batch)])
    assert columns(pg_conn, pg_schema, "t") == ["id", "name"]
    assert rows(pg_conn, pg_schema, "t") == [(1, "a"), (2, "B"), (3, "c")]
    assert run.count(DrainerMetric.UPDATES_APPLIED) == 1
    assert dead_letters(pg_conn, pg_schema) == []


# -- fix: the bucket age is checked on every record --------------------------------


def test_trickled_records_flush_by_age_without_state(tmp_path: Path, pg_url, pg_schema, pg_conn):
    """A tap sending a record now and then and no STATE: a bucket older than
    max_batch_age_seconds is flushed as the next record arrives."""
    path = write_config(tmp_path, config(pg_url, pg_schema, max_batch_age_seconds=1))
    with (tmp_path / "stderr").open("w") as err:
        proc = subprocess.Popen(
            [str(TARGET_BIN), "--config", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write(schema_msg("t", {"id": {"type": "integer"}}, ["id"]) + "\n")
            landed: list[tuple] = []
            deadline = time.monotonic() + 8
            i = 0
            while time.monotonic() < deadline and not landed:
                i += 1
                proc.stdin.write(record_msg("t", {"id": i}) + "\n")
                proc.stdin.flush()
                time.sleep(0.25)
                landed = rows(pg_conn, pg_schema, "t")
            assert proc.poll() is None  # the input is still open
            assert landed, "no record landed while the input stayed open"
            assert i <= 12  # within about 3 s of the first record
        finally:
            proc.stdin.close()
            proc.wait(60)
    assert proc.returncode == 0
