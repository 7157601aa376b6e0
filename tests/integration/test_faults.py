"""Crash tests: SIGKILL the tap or the target at random points, crash each server mid-run.

The CI-sized run of tests/fault_harness.py (the soak run is `make soak`). Every
scenario reruns from the last STATE the target printed until a run completes,
then checks: tables equal to the drainer's SQL in stream order, each entry
written or dead-lettered exactly once, no STATE past an entry not committed
when it was printed, Kafka holding every published row (duplicates only of
one source entry, with equal values).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from target_batched_postgres.metrics import DrainerMetric
from tests import fault_harness as fh
from tests import fault_pipeline as fp
from tests import fault_workload as fw
from tests.integration.target_helpers import config, record_msg, run_target, schema_msg

CI_KILLS = 20
CI_SEED = 20261129


@pytest.fixture
def servers(pg_url: str, redis_url: str, kafka_bootstrap: str) -> fh.Servers:
    return fh.Servers(pg_url, redis_url, kafka_bootstrap)


def assert_held(outcome: fh.Outcome) -> None:
    assert outcome.verdict.problems == [], outcome.summary()
    assert outcome.verdict.rows_lost == 0
    assert outcome.verdict.rows_duplicated == 0
    assert outcome.verdict.dead_letter_duplicates == 0


def test_random_kills_lose_and_duplicate_nothing(servers, tmp_path):
    outcomes = fh.soak(servers, tmp_path, kills=CI_KILLS, seed=CI_SEED, entries=400)
    kills = [kill for outcome in outcomes for kill in outcome.kills]
    assert len(kills) >= CI_KILLS
    for outcome in outcomes:
        assert_held(outcome)
    assert len({k.point for k in kills}) >= 4  # random moments and several named points
    assert sum(o.verdict.kafka_duplicates for o in outcomes) > 0  # kills did replay messages
    assert sum(o.verdict.states_checked for o in outcomes) >= len(kills)


@pytest.mark.parametrize(
    ("point", "decode_workers"),
    [
        ("during_fallback", 0),
        ("before_pg_commit", 0),
        ("after_pg_send", 0),
        ("between_reads", 0),
        ("between_reads", 2),  # batches in flight in the tap's decode workers
    ],
)
def test_kill_at_each_rare_point(servers, tmp_path, point, decode_workers):
    """Points a random draw may miss in a short run, each hit at least once."""
    scenario = fh.Scenario(
        servers,
        tmp_path,
        seed=5,
        entries=300,
        insert_batch_size=25,
        max_batches_per_statement=2,
        decode_workers=decode_workers,
    )
    process = "tap" if point in fh.TAP_POINTS else "target"
    outcome = fh.kill_chain(scenario, lambda: fh.Kill(process, point, 1), kills=2)
    assert outcome.kills, "the point was never reached"
    assert_held(outcome)


def test_a_tap_killed_with_batches_in_its_decode_workers_loses_nothing(servers, tmp_path):
    """SIGKILL of a tap, run after run, while its decode workers hold batches it read
    but has not written (after the 2nd, 5th and 9th read round, both workers
    busy): the rerun reads them again from the last STATE."""
    scenario = fh.Scenario(
        servers, tmp_path, seed=11, entries=1500, read_count=20, decode_workers=2
    )
    rounds = iter([2, 5, 9])
    outcome = fh.kill_chain(
        scenario, lambda: fh.Kill("tap", "between_reads", next(rounds)), kills=3
    )
    assert len(outcome.kills) == 3, outcome.summary()
    assert_held(outcome)


@pytest.mark.parametrize("how", ["postgres", "redis", "kafka"])
def test_server_crash_mid_run(servers, tmp_path, how):
    """PostgreSQL: immediate shutdown and restart (the target retries and goes on);
    Redis: SIGKILL and restart (a bounded tap fails, the rerun completes); Kafka:
    SIGKILL (the target fails naming Kafka, no STATE passes the unpublished
    records) and an empty broker restarted on its port (the rerun publishes all
    after the last STATE)."""
    outcome = fh.run_server_failure(servers, tmp_path, how, seed=11)
    assert_held(outcome)
    assert len(outcome.runs) >= 1


@pytest.fixture(scope="module")
def meltano_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not fh.meltano_bin().exists():
        pytest.fail(f"{fh.meltano_bin()} is missing: run `make meltano` (make test does)")
    return fh.prepare_meltano_project(tmp_path_factory.mktemp("meltano-faults"))


def test_meltano_run_killed_between_kafka_ack_and_commit_resumes(
    meltano_project, servers, tmp_path
):
    scenario = fh.Scenario(servers, tmp_path, seed=13, entries=300, insert_batch_size=25)
    outcome = fh.meltano_kill(meltano_project, scenario, fh.Kill("target", "after_kafka_ack", 8))
    assert_held(outcome)


def test_checks_catch_broken_guarantees(servers, tmp_path):
    """The checks can fail: each guarantee, broken on purpose after a clean run, is reported."""
    scenario = fh.Scenario(servers, tmp_path, seed=17, entries=200)
    scenario.prepare()
    try:
        pipeline = scenario.pipeline()
        pipeline.run_to_completion()
        states = fh.all_states(pipeline.runs)
        assert scenario.verify(states).problems == []
        first = next(e for e in scenario.workload if e.kind == "Create" and e.traces)
        early = [
            (dt.datetime(2000, 1, 1, tzinfo=dt.UTC), {"stream_ids": {first.key: first.entry_id}})
        ]
        assert any("passed entry" in p for p in scenario.verify(early).problems)
        poison = next(e for e in scenario.workload if e.poison is not None)
        with psycopg.connect(servers.postgres, autocommit=True) as conn:
            letters = sql.Identifier(scenario.schema, fh.DEAD_LETTERS)
            conn.execute(
                sql.SQL("DROP INDEX {}").format(
                    sql.Identifier(scenario.schema, f"{fh.DEAD_LETTERS}_source_entry")
                )
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (table_name, payload, error, source_stream, source_entry_id)"
                    " SELECT table_name, payload, error, source_stream, source_entry_id FROM {}"
                    " WHERE source_entry_id = %s"
                ).format(letters, letters),
                (poison.entry_id,),
            )
            table = sql.Identifier(scenario.schema, "booking")
            conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(table))
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE id = (SELECT id FROM {} LIMIT 1)").format(
                    table, table
                )
            )
        broken = scenario.verify(states)
        assert broken.dead_letter_duplicates == 1
        assert broken.rows_lost == 1
        verdict = fw.Verdict()
        messages = fh.read_topics(servers.kafka, scenario.topics)
        fw.check_kafka(scenario.workload, messages[1:], verdict)
        fw.check_kafka(scenario.workload, [*messages, messages[0]], verdict)
        assert verdict.kafka_duplicates == 1
        assert any("never reached Kafka" in p for p in verdict.problems)
    finally:
        scenario.cleanup()


BROKEN_TARGET = """
import sys
from target_batched_postgres import checkpoint
from target_batched_postgres.target import TargetBatchedPostgres

_take = checkpoint.Checkpointer.take_emittable
# Broken on purpose: every STATE goes out as soon as it arrives, durable or not.
checkpoint.Checkpointer.take_emittable = lambda self, oldest: _take(self, None)
TargetBatchedPostgres.cli()
"""


def test_a_target_checkpointing_too_early_is_caught(servers, tmp_path, monkeypatch):
    """The harness fails a target whose STATE passes records not yet committed."""
    script = tmp_path / "broken-target"
    script.write_text(f"#!{fp.BIN / 'python'}\n{BROKEN_TARGET}")
    script.chmod(0o755)
    monkeypatch.setattr(fp, "TARGET_BIN", script)
    scenario = fh.Scenario(servers, tmp_path, seed=0, insert_batch_size=100, read_count=20)
    outcome = fh.kill_chain(scenario, lambda: fh.Kill("target", "after_kafka_ack", 1), kills=2)
    assert any("passed entry" in p for p in outcome.verdict.problems), outcome.summary()


def test_a_replayed_poison_record_is_dead_lettered_once(pg_url, pg_conn, pg_schema):
    props = {"id": {"type": "integer"}, "n": {"type": ["integer", "null"]}}
    lines = [
        schema_msg("t", props, ["id"]),
        record_msg("t", {"id": 1, "n": 1}),
        record_msg(
            "t", {"id": 2, "n": "x", "_sdc_source_stream": "s", "_sdc_source_entry_id": "1-2"}
        ),
    ]
    for _ in range(2):  # the second run is a replay after a crash
        run = run_target(config(pg_url, pg_schema), lines)
        assert run.count(DrainerMetric.RECORDS_DEAD_LETTERED) == 1
    letters = pg_conn.execute(
        sql.SQL("SELECT source_stream, source_entry_id FROM {}").format(
            sql.Identifier(pg_schema, "_dead_letters")
        )
    ).fetchall()
    assert letters == [("s", "1-2")]
