"""Audit findings, fixed: decimal STATEs, lone surrogates, two streams of one table,
a writer error while only STATEs arrive."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from psycopg import sql

from target_batched_postgres.metrics import DrainerMetric
from tests.integration.target_helpers import (
    config,
    consume,
    record_msg,
    rows,
    run_target,
    run_target_cli,
    schema_msg,
    start_target,
    start_target_cli,
    state_msg,
)

PROPS = {"id": {"type": "integer"}, "s": {"type": ["string", "null"]}}
# A STATE as any Singer tap may send it: numbers with fractions, one past a double's digits.
DECIMAL_STATE = (
    '{"type": "STATE", "value": {"bookmarks": {"t": {"replication_key_value": 1700000000.5, '
    '"exact": 0.1000000000000000055511151231257827, "big": 123456789012345678901234567890}}}}'
)


def _decimal_state() -> object:
    return json.loads(DECIMAL_STATE, parse_float=Decimal)["value"]


def test_a_state_with_decimals_goes_out_digit_for_digit(tmp_path: Path, pg_url, pg_schema):
    lines = [schema_msg("t", PROPS, ["id"]), record_msg("t", {"id": 1}), DECIMAL_STATE]
    done = run_target_cli(tmp_path, config(pg_url, pg_schema), lines)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.splitlines()
    assert len(out) == 1
    assert json.loads(out[0], parse_float=Decimal) == _decimal_state()
    assert "0.1000000000000000055511151231257827" in out[0]
    # In process, stdout is text only (another path of _print_state).
    run = run_target(config(pg_url, pg_schema), lines)
    assert json.loads(run.stdout.getvalue(), parse_float=Decimal) == _decimal_state()


def _surrogate_lines() -> list[str]:
    def entry(i: int, value: str) -> dict[str, object]:
        return {"id": i, "s": value, "_sdc_source_stream": "kv", "_sdc_source_entry_id": f"1-{i}"}

    bad = json.dumps({"type": "RECORD", "stream": "t", "record": entry(2, "x\ud800")})
    assert "\\ud800" in bad  # the line spells it as JSON may: an escape
    return [
        schema_msg("t", PROPS, ["id"]),
        state_msg({"pos": 0}),
        record_msg("t", entry(1, "ok")),
        bad,
        record_msg("t", entry(3, "ok")),
        state_msg({"pos": 3}),
        json.dumps(
            {
                "type": "RECORD",
                "stream": "t",
                "record": {
                    "s": "y\udfff",
                    "_sdc_operation": "update",
                    "_sdc_where": {"column": "id", "op": "=", "value": 1},
                    "_sdc_source_stream": "kv",
                    "_sdc_source_entry_id": "1-4",
                },
            }
        ),
        state_msg({"pos": 4}),
    ]


def _dead_letters(pg_conn, schema: str) -> list[tuple]:
    query = sql.SQL(
        "SELECT source_entry_id, payload->>'s', error FROM {} ORDER BY source_entry_id"
    ).format(sql.Identifier(schema, "_dead_letters"))
    return pg_conn.execute(query).fetchall()


@pytest.mark.parametrize("kafka", [False, True], ids=["postgres", "kafka"])
def test_a_lone_surrogate_is_dead_lettered_and_the_good_rows_land(
    tmp_path: Path, pg_url, pg_schema, pg_conn, kafka_bootstrap, unique, kafka
):
    settings = config(pg_url, pg_schema, insert_batch_size=10)
    if kafka:
        settings.update(
            kafka_enabled=True,
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_topic_template=f"{{table}}-{unique}",
        )
    for attempt in range(2):  # the rerun (a replay) is as calm: nothing new dead-lettered
        done = run_target_cli(tmp_path, settings, _surrogate_lines())
        assert done.returncode == 0, done.stderr[-3000:]
        assert [json.loads(line) for line in done.stdout.splitlines()] == [
            {"pos": 0},
            {"pos": 3},
            {"pos": 4},
        ]
        assert rows(pg_conn, pg_schema, "t") == [(1, "ok"), (3, "ok")]
        letters = _dead_letters(pg_conn, pg_schema)
        assert [(entry, payload) for entry, payload, _ in letters] == [
            ("1-2", "x\\ud800"),  # the visible text: jsonb holds no lone surrogate
            ("1-4", "y\\udfff"),
        ], attempt
        assert all("column 's' holds a lone surrogate" in error for *_, error in letters)
        assert "Dead-lettering a record of 't' (source stream 'kv', entry '1-2')" in done.stderr
    if kafka:
        messages = consume(kafka_bootstrap, f"t-{unique}", expected=8)
        values = {m.value() for m in messages}
        assert b'{"id":2,"s":"x\\ud800"}' in values  # as the tap sent it
        assert b'{"s":"y\\udfff"}' in values  # the update's columns


def test_a_change_waits_for_inserts_of_every_stream_of_its_table(pg_url, pg_schema, pg_conn):
    """ "Orders" and "orders" (or "order-items" and "order_items") write one table."""
    props = {"id": {"type": "integer"}, "v": {"type": "string"}}
    run = start_target(config(pg_url, pg_schema, insert_batch_size=100))
    run.feed(
        [
            schema_msg("Orders", props, ["id"]),
            schema_msg("orders", props, ["id"]),
            schema_msg("order-items", props, ["id"]),
            schema_msg("order_items", props, ["id"]),
            record_msg("orders", {"id": 2, "v": "created"}),
            record_msg("Orders", {"id": 1, "v": "created"}),
            record_msg("order-items", {"id": 1, "v": "created"}),
            record_msg("orders", {"id": 3, "v": "created"}),
            record_msg(
                "orders",
                {
                    "v": "updated",
                    "_sdc_operation": "update",
                    "_sdc_where": {"column": "id", "op": "in", "value": [1, 2]},
                },
            ),
            record_msg(
                "order_items",
                {"_sdc_operation": "delete", "_sdc_where": {"column": "id", "op": "=", "value": 1}},
            ),
            state_msg({"upto": "changes"}),
        ]
    )
    # The changes, and the STATE after them, came after every earlier insert of their table.
    assert run.states == [{"upto": "changes"}]
    assert rows(pg_conn, pg_schema, "orders") == [(1, "updated"), (2, "updated"), (3, "created")]
    assert rows(pg_conn, pg_schema, "order_items") == []
    run.finish()
    assert run.count(DrainerMetric.CHANGES_MATCHED_NO_ROW) == 0


def test_a_writer_error_stops_the_run_at_the_next_state(tmp_path: Path, pg_url, pg_schema):
    """An idle follow-mode tap sends only heartbeat STATEs: the run still stops, at once."""
    settings = config(pg_url, pg_schema, on_record_error="fail", max_batch_age_seconds=0.2)
    proc = start_target_cli(tmp_path, settings)
    assert proc.stdin is not None
    lines = [
        schema_msg("t", PROPS, ["id"]),
        record_msg(
            "t", {"id": "not-a-number", "_sdc_source_stream": "s", "_sdc_source_entry_id": "1-0"}
        ),
    ]
    started = time.monotonic()
    try:
        proc.stdin.write("\n".join(lines) + "\n")
        proc.stdin.flush()
        while proc.poll() is None and time.monotonic() - started < 60:
            proc.stdin.write(state_msg({"s": "1-0"}) + "\n")  # heartbeats, never EOF
            proc.stdin.flush()
            time.sleep(0.2)
    except BrokenPipeError:
        pass  # it stopped reading: it is exiting
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - started < 30, "still running on heartbeats"
    assert proc.returncode not in (0, None)
    assert out == ""  # no STATE passed the failed record
    assert "Writer thread drainer-postgres stopped the run: FatalError: record rejected" in err
    assert "entry '1-0'" in err
