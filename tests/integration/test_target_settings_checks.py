"""Settings refused or made clear against the real servers: the CLI as operators run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from target_batched_postgres import kafka_writer
from target_batched_postgres.errors import FatalError
from target_batched_postgres.kafka_writer import KafkaPublisher
from target_batched_postgres.metrics import Metrics
from target_batched_postgres.retry import RetryPolicy
from tests.integration.target_helpers import (
    InProcessRun,
    config,
    record_msg,
    rows,
    run_target,
    run_target_cli,
    schema_msg,
    start_target,
    state_msg,
)

PROPS = {"id": {"type": "integer"}, "name": {"type": ["string", "null"]}}
PASSWORD = "S3CRETPW"


def _feed_and_finish(run: InProcessRun, lines: list[str]) -> None:
    """The whole input, then end of input: the target closes even when the feed fails."""
    try:
        run.feed(lines)
    finally:
        run.finish()


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql//drainer:{PASSWORD}@127.0.0.1:1/app",  # the scheme's colon missing
        f"postgresql://drainer:{PASSWORD}%zz@127.0.0.1:1/app",  # an unencoded %
        f"host=127.0.0.1 password={PASSWORD} port=1 bogus=1",
        f"postgresql://drainer:{PASSWORD}@127.0.0.1:1/app?foo=bar",
        f"postgresql://drainer:{PASSWORD}@127.0.0.1:1/app?sslmode={PASSWORD}",
    ],
)
def test_a_malformed_database_url_shows_no_password(tmp_path: Path, url: str):
    lines = [schema_msg("t", PROPS, ["id"]), record_msg("t", {"id": 1}), state_msg({"n": 1})]
    result = run_target_cli(tmp_path, {"database_url": url}, lines, timeout=60)
    assert result.returncode != 0
    assert "database_url" in result.stderr
    assert PASSWORD not in result.stderr
    assert PASSWORD not in result.stdout
    assert result.stdout.strip() == ""  # no STATE


@pytest.mark.parametrize(
    ("extra", "env"),
    [
        (
            {"kafka_enabled": True, "kafka_bootstrap_servers": "127.0.0.1:1"},
            {"PUSH_TO_KAFKA": "false"},
        ),
        ({}, {"PUSH_TO_KAFKA": ""}),
        (
            {
                "kafka_enabled": True,
                "kafka_bootstrap_servers": "127.0.0.1:1",
                "db_only_tables": ["T"],
            },
            {"PUSH_TO_KAFKA": ""},
        ),
    ],
)
def test_kafka_only_tables_that_would_go_nowhere_refuse_to_start(
    tmp_path: Path, pg_url, pg_schema, pg_conn, extra: dict[str, Any], env: dict[str, str]
):
    cfg = config(pg_url, pg_schema, kafka_only_tables=["t"], **extra)
    lines = [schema_msg("T", PROPS, ["id"]), record_msg("T", {"id": 1}), state_msg({"n": 1})]
    result = run_target_cli(tmp_path, cfg, lines, env=env, timeout=60)
    assert result.returncode != 0
    assert "kafka_only_tables" in result.stderr
    assert result.stdout.strip() == ""  # no STATE passes records written nowhere
    assert rows(pg_conn, pg_schema, "t") == []


def test_bad_topic_template_refuses_to_start_naming_the_setting(
    tmp_path: Path, pg_url, pg_schema, kafka_bootstrap
):
    cfg = config(
        pg_url,
        pg_schema,
        kafka_enabled=True,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_template="{tabel}-events",
    )
    result = run_target_cli(tmp_path, cfg, [state_msg({"n": 1})], timeout=60)
    assert result.returncode != 0
    assert "kafka_topic_template" in result.stderr
    assert "{tabel}" in result.stderr
    assert result.stdout.strip() == ""


def test_upsert_without_a_matching_unique_index_names_table_and_keys(
    pg_url, pg_schema, pg_conn: psycopg.Connection
):
    props = {**PROPS, "n": {"type": ["integer", "null"]}}
    run_target(
        config(pg_url, pg_schema),
        [schema_msg("people", props, ["id"]), record_msg("people", {"id": 1, "name": "a", "n": 1})],
    )
    # The stream's key is now (id, name); the table's is still (id).
    run = start_target(config(pg_url, pg_schema, on_conflict="upsert"))
    lines = [schema_msg("people", props, ["id", "name"])]
    lines += [record_msg("people", {"id": 1, "name": "a", "n": 2}), state_msg({"n": 1})]
    with pytest.raises(FatalError) as raised:
        _feed_and_finish(run, lines)
    text = str(raised.value)
    assert f"'{pg_schema}.people'" in text
    assert "['id', 'name']" in text
    assert "CREATE UNIQUE INDEX" in text
    assert "do_nothing" in text
    assert run.states == []
    assert rows(pg_conn, pg_schema, "people") == [(1, "a", 1)]


def test_preflight_passes_connection_settings_to_the_admin_client(
    kafka_bootstrap, monkeypatch: pytest.MonkeyPatch
):
    seen: dict[str, Any] = {}
    real_admin = kafka_writer.AdminClient

    def spy(admin_config: dict[str, Any]) -> Any:
        seen.update(admin_config)
        return real_admin(admin_config)

    monkeypatch.setattr(kafka_writer, "AdminClient", spy)
    producer_config = {"broker.address.family": "v4", "api.version.request": True}
    publisher = KafkaPublisher(
        kafka_bootstrap,
        producer_config,
        delivery_timeout_seconds=5,
        retry=RetryPolicy(max_attempts=1, backoff_seconds=0),
        metrics=Metrics(),
    )
    try:
        publisher.preflight()
    finally:
        publisher.close()
    assert seen["broker.address.family"] == "v4"
    assert seen["api.version.request"] is True
    assert seen["bootstrap.servers"] == kafka_bootstrap
    assert "enable.idempotence" not in seen
