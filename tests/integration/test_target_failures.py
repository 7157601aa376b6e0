"""Failures: crashes and replays, conflicts, record errors, lost connections, bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from target_batched_postgres.metrics import DrainerMetric
from tests.integration.target_helpers import (
    TARGET_BIN,
    config,
    record_msg,
    rows,
    run_target,
    run_target_cli,
    schema_msg,
    start_target,
    start_target_cli,
    state_msg,
    states_of,
    write_config,
)
from tests.servers import free_port
from tests.stop_signals import output_while_stopping

PROPS = {"id": {"type": "integer"}, "name": {"type": ["string", "null"]}}


def test_rerun_after_crash_duplicates_no_row(tmp_path: Path, pg_url, pg_schema, pg_conn):
    lines = [schema_msg("people", PROPS, ["id"])]
    for i in range(30):
        lines.append(record_msg("people", {"id": i, "name": f"n{i}"}))
        if i % 10 == 9:
            lines.append(state_msg({"upto": i}))
    cfg = write_config(tmp_path, config(pg_url, pg_schema, insert_batch_size=10))
    proc = subprocess.Popen(
        [str(TARGET_BIN), "--config", str(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write("\n".join(lines[:23]) + "\n")  # 20 records, 2 states, 1 more record
    proc.stdin.flush()
    states: list[object] = []
    while states[-1:] != [{"upto": 19}]:
        states.append(json.loads(proc.stdout.readline()))
    # Two batches waiting together share one statement, and then only the later STATE is due.
    assert states in ([{"upto": 9}, {"upto": 19}], [{"upto": 19}])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(rows(pg_conn, pg_schema, "people")) == 20
    # The orchestrator replays from the last STATE it saw; here: all input again.
    rerun = run_target_cli(tmp_path, config(pg_url, pg_schema, insert_batch_size=10), lines)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [r[0] for r in rows(pg_conn, pg_schema, "people")] == list(range(30))


def test_on_conflict_upsert_keeps_the_last_row(pg_url, pg_schema, pg_conn):
    lines = [schema_msg("people", PROPS, ["id"])]
    lines += [record_msg("people", {"id": i % 3, "name": f"v{i}"}) for i in range(7)]
    run_target(config(pg_url, pg_schema, on_conflict="upsert", insert_batch_size=4), lines)
    assert rows(pg_conn, pg_schema, "people") == [(0, "v6"), (1, "v4"), (2, "v5")]


def test_on_conflict_do_nothing_keeps_the_first_row(pg_url, pg_schema, pg_conn):
    lines = [schema_msg("people", PROPS, ["id"])]
    lines += [record_msg("people", {"id": i % 3, "name": f"v{i}"}) for i in range(7)]
    run = run_target(config(pg_url, pg_schema, insert_batch_size=4), lines)
    assert rows(pg_conn, pg_schema, "people") == [(0, "v0"), (1, "v1"), (2, "v2")]
    assert run.count(DrainerMetric.RECORDS_DEAD_LETTERED) == 0


def test_on_conflict_error_dead_letters_the_duplicate(pg_url, pg_schema, pg_conn):
    lines = [schema_msg("people", PROPS, ["id"])]
    lines += [record_msg("people", {"id": i, "name": "a"}) for i in (1, 2, 1, 3)]
    run = run_target(config(pg_url, pg_schema, on_conflict="error"), lines)
    assert [r[0] for r in rows(pg_conn, pg_schema, "people")] == [1, 2, 3]
    assert run.count(DrainerMetric.BATCH_FALLBACK_USED) == 1
    letters = pg_conn.execute(
        sql.SQL("SELECT payload, sqlstate FROM {}").format(
            sql.Identifier(pg_schema, "_dead_letters")
        )
    ).fetchall()
    assert letters == [({"id": 1, "name": "a"}, "23505")]


def test_on_record_error_fail_stops_the_run_naming_the_record(tmp_path, pg_url, pg_schema):
    lines = [
        schema_msg("people", {**PROPS, "_sdc_source_entry_id": {"type": "string"}}, ["id"]),
        record_msg("people", {"id": 1, "name": "ok"}),
        record_msg("people", {"id": 2, "name": "x\u0000", "_sdc_source_entry_id": "5-7"}),
        state_msg({"n": 2}),
    ]
    result = run_target_cli(tmp_path, config(pg_url, pg_schema, on_record_error="fail"), lines)
    assert result.returncode != 0
    assert "on_record_error=fail" in result.stderr
    assert "'5-7'" in result.stderr
    assert result.stdout.strip() == ""


def test_lost_connection_is_retried(pg_url, pg_schema, pg_conn):
    run = start_target(config(pg_url, pg_schema, insert_batch_size=2, retry_backoff_seconds=0.1))
    run.feed(
        [schema_msg("people", PROPS, ["id"])] + [record_msg("people", {"id": i}) for i in (1, 2)]
    )
    killed = pg_conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = 'target-batched-postgres' AND pid <> pg_backend_pid()"
    ).fetchone()
    assert killed == (1,)
    run.feed([record_msg("people", {"id": i}) for i in (3, 4)])
    run.finish()
    assert [r[0] for r in rows(pg_conn, pg_schema, "people")] == [1, 2, 3, 4]


# -- configuration: fail before reading input, naming the setting ----------------


def run_without_input(
    tmp_path: Path, cfg: dict, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the target with a stdin that never ends: only a pre-input failure returns."""
    with subprocess.Popen(
        [str(TARGET_BIN), "--config", str(write_config(tmp_path, cfg))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else {**os.environ, **env},
    ) as proc:
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the target read input instead of failing on its configuration")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"on_conflict": "merge"}, "on_conflict"),
        ({"insert_batch_size": 0}, "insert_batch_size"),
        ({"on_record_error": "ignore"}, "on_record_error"),
        ({"kafka_enabled": True}, "kafka_bootstrap_servers"),
    ],
)
def test_bad_settings_fail_before_input(tmp_path, pg_url, pg_schema, extra, named):
    result = run_without_input(tmp_path, config(pg_url, pg_schema, **extra))
    assert result.returncode != 0
    assert named in result.stderr


def test_bad_env_switch_is_named(tmp_path, pg_url, pg_schema):
    result = run_without_input(
        tmp_path, config(pg_url, pg_schema), env={"INSERT_BATCH_SIZE": "lots"}
    )
    assert result.returncode != 0
    assert "INSERT_BATCH_SIZE" in result.stderr


def test_unreachable_postgres_is_named(tmp_path, pg_schema):
    url = f"postgresql://postgres:pg-s3cret@127.0.0.1:{free_port()}/postgres"
    result = run_without_input(tmp_path, config(url, pg_schema))
    assert result.returncode != 0
    assert "database_url" in result.stderr
    assert "pg-s3cret" not in result.stderr


def test_unreachable_kafka_is_named(tmp_path, pg_url, pg_schema):
    cfg = config(
        pg_url, pg_schema, kafka_enabled=True, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}"
    )
    result = run_without_input(tmp_path, cfg)
    assert result.returncode != 0
    assert "kafka_bootstrap_servers" in result.stderr


def test_missing_privileges_are_named(tmp_path, pg_url, pg_conn):
    role = f"limited_{uuid.uuid4().hex[:8]}"
    pg_conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        url = psycopg.conninfo.make_conninfo(pg_url, user=role)
        result = run_without_input(tmp_path, config(url, f"s_{uuid.uuid4().hex[:8]}"))
        assert result.returncode != 0
        assert "database_url" in result.stderr
        assert "permission denied" in result.stderr
    finally:
        pg_conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_secrets_reach_neither_logs_nor_dead_letters(
    tmp_path, pg_url, pg_schema, pg_conn, kafka_bootstrap
):
    """A password in database_url and a SASL password in kafka_producer_config appear
    nowhere: not in the log, not in STATE output, not in any dead letter column."""
    secret_url = psycopg.conninfo.make_conninfo(pg_url, password="pg-s3cret-pw")
    producer = {"sasl.username": "drainer", "sasl.password": "kafka-s3cret-pw"}
    cfg = config(
        secret_url,
        pg_schema,
        kafka_enabled=True,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_template=f"secrets-{pg_schema}",
        kafka_producer_config=producer,
        insert_batch_size=2,
    )
    source = {"_sdc_source_stream": "s"}
    lines = [
        schema_msg("people", {**PROPS, "age": {"type": ["integer", "null"]}}, ["id"]),
        record_msg("people", {"id": 1, "age": 1, **source, "_sdc_source_entry_id": "1-1"}),
        record_msg("people", {"id": 2, "age": "old", **source, "_sdc_source_entry_id": "1-2"}),
        record_msg("people", {"id": 3, "name": "x\u0000", **source, "_sdc_source_entry_id": "1-3"}),
        state_msg({"n": 3}),
    ]
    result = run_target_cli(tmp_path, cfg, lines)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Dead-lettering a record" in result.stderr
    letters = pg_conn.execute(
        sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(pg_schema, "_dead_letters"))
    ).fetchall()
    assert len(letters) == 2
    for text in [result.stderr, result.stdout, *(row[0] for row in letters)]:
        assert "pg-s3cret-pw" not in text
        assert "kafka-s3cret-pw" not in text


def test_a_lock_held_elsewhere_is_a_bounded_wait(tmp_path, pg_url, pg_schema, pg_conn):
    """statement_timeout_seconds bounds a wait for a lock: retried, then a clear failure."""
    pg_conn.execute(
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, name text)").format(
            sql.Identifier(pg_schema, "people")
        )
    )
    lines = [schema_msg("people", PROPS, ["id"]), record_msg("people", {"id": 1, "name": "a"})]
    cfg = config(
        pg_url, pg_schema, statement_timeout_seconds=1, max_attempts=2, retry_backoff_seconds=0.1
    )
    with psycopg.connect(pg_url) as holder:  # a transaction holding the table, never ending
        holder.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier(pg_schema, "people")
            )
        )
        started = time.monotonic()
        result = run_target_cli(tmp_path, cfg, lines, timeout=60)
        elapsed = time.monotonic() - started
        holder.rollback()
    assert result.returncode != 0
    assert "failed after 2 attempt(s)" in result.stderr
    assert "canceling statement due to" in result.stderr  # statement or lock timeout
    assert elapsed < 30
    assert rows(pg_conn, pg_schema, "people") == []


def test_stop_signals_while_writing_cut_no_state_line(tmp_path: Path, pg_url, pg_schema):
    """SIGSTOP/SIGCONT (Ctrl-Z, a debugger or py-spy attaching) cut the target's blocking
    writes to a full pipe short; every STATE line must still arrive whole."""
    cfg = write_config(tmp_path, config(pg_url, pg_schema))
    states = [{"bookmarks": {"n": n, "pad": "x" * 20_000}} for n in range(1500)]
    proc = subprocess.Popen(
        [str(TARGET_BIN), "--config", str(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )

    def feed() -> None:
        assert proc.stdin is not None
        for state in states:
            proc.stdin.write(state_msg(state).encode() + b"\n")
        proc.stdin.close()

    output = output_while_stopping(proc, max_stops=200, feed=feed)
    emitted = [json.loads(line) for line in output.splitlines()]  # a cut line fails
    assert emitted[-1] == states[-1]
    assert [s["bookmarks"]["n"] for s in emitted] == sorted({s["bookmarks"]["n"] for s in emitted})


def _terminated(tmp_path: Path, settings: dict[str, object], lines: list[str]):
    """A target fed `lines` on an open pipe, then sent SIGTERM while it waits for more."""
    proc = start_target_cli(tmp_path, settings)
    assert proc.stdin is not None
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()
    time.sleep(3)  # it has read them and blocks for more (the pipe stays open)
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, out, err


def test_sigterm_flushes_open_buckets_and_prints_the_last_state(tmp_path, pg_url, pg_schema):
    settings = config(pg_url, pg_schema, insert_batch_size=1000, max_batch_age_seconds=600)
    lines = [schema_msg("t", PROPS, ["id"])]
    lines += [record_msg("t", {"id": i, "name": f"n{i}"}) for i in range(5)]
    lines.append(state_msg({"s": "5-0"}))
    returncode, out, err = _terminated(tmp_path, settings, lines)
    assert returncode == 0, err[-2000:]
    assert states_of(out)[-1] == {"s": "5-0"}
    with psycopg.connect(pg_url) as conn:
        assert len(rows(conn, pg_schema, "t")) == 5


def test_sigterm_after_a_failure_exits_non_zero(tmp_path, pg_url, pg_schema):
    """The SDK's handler drained inside the signal handler and exited 0 whatever
    the drain raised: a failed run looked like a success to Meltano."""
    settings = config(
        pg_url, pg_schema, insert_batch_size=1000, max_batch_age_seconds=600,
        on_record_error="fail",
    )  # fmt: skip
    lines = [
        schema_msg("t", PROPS, ["id"]),
        record_msg("t", {"id": "not-a-number", "_sdc_source_entry_id": "1-0"}),
        state_msg({"s": "1-0"}),
    ]
    returncode, out, err = _terminated(tmp_path, settings, lines)
    assert returncode not in (0, None)
    assert states_of(out) == []  # no STATE passed the failed record
    assert "record rejected" in err
