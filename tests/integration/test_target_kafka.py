"""Kafka first, then PostgreSQL: against the real Kafka-protocol broker."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from target_batched_postgres.metrics import DrainerMetric
from tests.integration.target_helpers import (
    TARGET_BIN,
    consume,
    metric_totals,
    record_msg,
    rows,
    run_target,
    run_target_cli,
    schema_msg,
    state_msg,
    write_config,
)

PROPS = {
    "id": {"type": "integer"},
    "name": {"type": ["string", "null"]},
    "_sdc_source_stream": {"type": "string"},
    "_sdc_source_entry_id": {"type": "string"},
}


def kafka_config(pg_url: str, schema: str, bootstrap: str, unique: str, **extra: object) -> dict:
    return {
        "database_url": pg_url,
        "default_target_schema": schema,
        "kafka_enabled": True,
        "kafka_bootstrap_servers": bootstrap,
        "kafka_topic_template": f"{{table}}-{unique}",
        **extra,
    }


def entry(i: int, name: object = None, shard: int = 0) -> str:
    return record_msg(
        "people",
        {
            "id": i,
            "name": name if name is not None else f"n{i}",
            "_sdc_source_stream": f"rider-db-sync-stream{{shard-{shard}}}",
            "_sdc_source_entry_id": f"1700000000000-{i}",
        },
    )


def test_batch_is_published_with_key_and_headers_then_written(
    pg_url, pg_schema, pg_conn, kafka_bootstrap, unique
):
    lines = [schema_msg("people", PROPS, ["id"]), *(entry(i, shard=i % 2) for i in range(10))]
    run = run_target(
        kafka_config(pg_url, pg_schema, kafka_bootstrap, unique, insert_batch_size=5), lines
    )
    assert run.count(DrainerMetric.KAFKA_MESSAGES_PUBLISHED) == 10
    messages = consume(kafka_bootstrap, f"people-{unique}", expected=10)
    assert len(messages) == 10
    by_id = {json.loads(m.value() or b"null")["id"]: m for m in messages}
    assert sorted(by_id) == list(range(10))
    sample = by_id[3]
    assert json.loads(sample.value() or b"null") == {
        "id": 3,
        "name": "n3",
    }  # control props stay out
    assert sample.key() == b"rider-db-sync-stream{shard-1}"
    assert dict(sample.headers() or []) == {
        "table": b"people",
        "operation": b"insert",
        "source_stream": b"rider-db-sync-stream{shard-1}",
        "source_entry_id": b"1700000000000-3",
    }
    assert len(rows(pg_conn, pg_schema, "people")) == 10


def test_bad_row_mid_batch_falls_back_and_kafka_sees_each_message_once(
    pg_url, pg_schema, pg_conn, kafka_bootstrap, unique
):
    lines = [schema_msg("people", PROPS, ["id"])]
    lines += [entry(i, name="bad\u0000name" if i == 4 else None) for i in range(8)]
    run = run_target(
        kafka_config(pg_url, pg_schema, kafka_bootstrap, unique, insert_batch_size=8), lines
    )
    assert run.count(DrainerMetric.BATCH_FALLBACK_USED) == 1
    assert run.count(DrainerMetric.RECORDS_WRITTEN) == 7
    assert run.count(DrainerMetric.RECORDS_DEAD_LETTERED) == 1
    assert [r[0] for r in rows(pg_conn, pg_schema, "people")] == [0, 1, 2, 3, 5, 6, 7]
    letters = pg_conn.execute(
        "SELECT table_name, payload, error, source_stream, source_entry_id"
        f' FROM "{pg_schema}"._dead_letters'
    ).fetchall()
    assert len(letters) == 1
    table, payload, error, source, entry_id = letters[0]
    assert (table, payload["id"], source, entry_id) == (
        "people",
        4,
        "rider-db-sync-stream{shard-0}",
        "1700000000000-4",
    )
    assert "\\u0000" in error  # PostgreSQL's reason: text cannot hold a NUL
    messages = consume(kafka_bootstrap, f"people-{unique}", expected=8)
    ids = sorted(json.loads(m.value() or b"null")["id"] for m in messages)
    assert ids == list(range(8))  # the fallback never re-sends to Kafka


def test_kafka_only_and_db_only_tables(pg_url, pg_schema, pg_conn, kafka_bootstrap, unique):
    props = {**PROPS, "_sdc_force_drain": {"type": "boolean"}}
    lines = [schema_msg("events", props, ["id"]), schema_msg("ledger", props, ["id"])]
    lines += [record_msg("events", {"id": i, "name": "e"}) for i in range(3)]
    lines.append(record_msg("events", {"id": 9, "name": "forced", "_sdc_force_drain": True}))
    lines += [record_msg("ledger", {"id": i, "name": "l"}) for i in range(3)]
    config = kafka_config(
        pg_url,
        pg_schema,
        kafka_bootstrap,
        unique,
        kafka_only_tables=["events"],
        db_only_tables=["ledger"],
    )
    run_target(config, lines)
    # Kafka-only: PostgreSQL gets only the force-drained record.
    assert rows(pg_conn, pg_schema, "events") == [(9, "forced")]
    assert len(consume(kafka_bootstrap, f"events-{unique}", expected=4)) == 4
    # DB-only: all rows in PostgreSQL, nothing on its topic.
    assert len(rows(pg_conn, pg_schema, "ledger")) == 3
    assert consume(kafka_bootstrap, f"ledger-{unique}", expected=1, timeout=4) == []


def test_push_to_kafka_env_switch(tmp_path: Path, pg_url, pg_schema, kafka_bootstrap, unique):
    lines = [schema_msg("people", PROPS, ["id"]), *(entry(i) for i in range(3))]
    config = kafka_config(pg_url, pg_schema, kafka_bootstrap, unique)
    off = run_target_cli(tmp_path, config, lines, env={"PUSH_TO_KAFKA": "false"})
    assert off.returncode == 0, off.stderr[-3000:]
    assert metric_totals(off.stderr)["kafka_messages_published"] == 0
    on = run_target_cli(
        tmp_path, {**config, "kafka_enabled": False}, lines, env={"PUSH_TO_KAFKA": "true"}
    )
    assert on.returncode == 0, on.stderr[-3000:]
    assert metric_totals(on.stderr)["kafka_messages_published"] == 3


def test_broker_killed_mid_run_fails_without_writing_unacknowledged_rows(
    tmp_path: Path, pg_url, pg_schema, pg_conn, dedicated_kafka, unique
):
    config = kafka_config(
        pg_url,
        pg_schema,
        dedicated_kafka.url,
        unique,
        insert_batch_size=5,
        kafka_delivery_timeout_seconds=2,
        max_attempts=2,
        retry_backoff_seconds=0.2,
    )
    stderr_path = tmp_path / "stderr.txt"
    proc = subprocess.Popen(
        [str(TARGET_BIN), "--config", str(write_config(tmp_path, config))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("w"),
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    first = [
        schema_msg("people", PROPS, ["id"]),
        *(entry(i) for i in range(5)),
        state_msg({"n": 5}),
    ]
    proc.stdin.write("\n".join(first) + "\n")
    proc.stdin.flush()
    # The first batch is durable once its STATE comes out.
    assert json.loads(proc.stdout.readline()) == {"n": 5}
    dedicated_kafka.kill()
    second = [*(entry(i) for i in range(5, 10)), state_msg({"n": 10})]
    proc.stdin.write("\n".join(second) + "\n")
    proc.stdin.close()
    started = time.monotonic()
    assert proc.wait(timeout=120) != 0
    rest = proc.stdout.read()
    stderr = stderr_path.read_text()
    assert rest.strip() == ""  # no STATE past the unacknowledged records
    assert "Kafka delivery failed" in stderr
    assert time.monotonic() - started < 60
    assert [r[0] for r in rows(pg_conn, pg_schema, "people")] == [0, 1, 2, 3, 4]


def test_another_taps_records_are_keyed_by_their_primary_key(
    pg_url, pg_schema, kafka_bootstrap, unique
):
    """Without `_sdc_source_stream` (a tap other than ours), the Kafka key is the
    key property's value, or the JSON array of them for a compound key."""
    props = {"id": {"type": "integer"}, "region": {"type": "string"}, "name": {"type": "string"}}
    lines = [
        schema_msg("single", props, ["id"]),
        schema_msg("pair", props, ["id", "region"]),
        *(record_msg("single", {"id": i, "region": "eu", "name": f"n{i}"}) for i in range(3)),
        *(record_msg("pair", {"id": i, "region": "eu", "name": f"n{i}"}) for i in range(3)),
    ]
    run_target(kafka_config(pg_url, pg_schema, kafka_bootstrap, unique), lines)
    single = consume(kafka_bootstrap, f"single-{unique}", expected=3)
    assert sorted(m.key() or b"" for m in single) == [b"0", b"1", b"2"]
    pair = consume(kafka_bootstrap, f"pair-{unique}", expected=3)
    assert sorted(json.loads(m.key() or b"null") for m in pair) == [[0, "eu"], [1, "eu"], [2, "eu"]]
