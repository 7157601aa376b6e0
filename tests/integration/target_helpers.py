"""Helpers to drive target-batched-postgres in tests: in-process or as a CLI process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Message
from psycopg import sql

from target_batched_postgres.target import TargetBatchedPostgres

TARGET_BIN = Path(sys.executable).parent / "target-batched-postgres"


def schema_msg(stream: str, properties: Mapping[str, Any], keys: Iterable[str] = ()) -> str:
    return json.dumps(
        {
            "type": "SCHEMA",
            "stream": stream,
            "schema": {"type": "object", "properties": dict(properties)},
            "key_properties": list(keys),
        }
    )


def record_msg(stream: str, record: Mapping[str, Any]) -> str:
    return json.dumps({"type": "RECORD", "stream": stream, "record": dict(record)})


def state_msg(value: Any) -> str:
    return json.dumps({"type": "STATE", "value": value})


@dataclass
class InProcessRun:
    target: TargetBatchedPostgres
    stdout: io.StringIO

    @property
    def states(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.getvalue().splitlines() if line]

    def feed(self, lines: Iterable[str]) -> None:
        """Process lines without ending the input (buckets stay open).

        Flushes the lines triggered run on the target's writer thread; this
        waits for them (and the STATEs they make safe), as time would.
        """
        with contextlib.redirect_stdout(self.stdout):
            self.target.process_lines(io.StringIO("\n".join(lines) + "\n"))
            self.target.wait_durable()

    def finish(self) -> None:
        with contextlib.redirect_stdout(self.stdout):
            self.target.process_endofpipe()

    def count(self, metric: Any) -> int:
        return self.target.drainer_metrics[metric]


def start_target(config: Mapping[str, Any]) -> InProcessRun:
    target = TargetBatchedPostgres(config=dict(config))
    target.preflight()
    return InProcessRun(target, io.StringIO())


def run_target(config: Mapping[str, Any], lines: Iterable[str]) -> InProcessRun:
    run = start_target(config)
    run.feed(lines)
    run.finish()
    return run


def write_config(tmp_path: Path, config: Mapping[str, Any]) -> Path:
    path = tmp_path / f"target-config-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(dict(config)))
    return path


def run_target_cli(
    tmp_path: Path,
    config: Mapping[str, Any],
    lines: Iterable[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    path = write_config(tmp_path, config)
    return subprocess.run(
        [str(TARGET_BIN), "--config", str(path)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def start_target_cli(tmp_path: Path, config: Mapping[str, Any]) -> subprocess.Popen[str]:
    """The target CLI with pipes for stdin, stdout and stderr (text), for a test to feed."""
    return subprocess.Popen(
        [str(TARGET_BIN), "--config", str(write_config(tmp_path, config))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_MELTANO_METRIC = re.compile(
    r"target-batched-postgres METRIC .*metric_name=(\w+) metric_value=(\d+)\b"
)


def metric_totals(stderr: str) -> dict[str, int]:
    """The last logged value of each of the target's counters.

    Reads the target's own `METRIC: {json}` lines (untagged totals), and the
    same lines as `meltano run` re-logs them (`metric_name=... metric_value=...`),
    where the totals logged at the end of the run come last.
    """
    totals: dict[str, int] = {}
    for line in stderr.splitlines():
        if "METRIC: " in line:
            point = json.loads(line.split("METRIC: ", 1)[1])
            if point["type"] == "counter" and not point["tags"]:
                totals[point["metric"]] = point["value"]
        elif match := _MELTANO_METRIC.search(line):
            totals[match.group(1)] = int(match.group(2))
    return totals


def states_of(stdout: str) -> list[Any]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[Message]:
    """Read a topic from the beginning until `expected` messages or the timeout (then 1 s more)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 200,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    settle: float | None = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                messages.append(msg)
            if len(messages) >= expected:
                # Keep polling briefly so duplicates, if any, are seen too.
                settle = settle or time.monotonic() + 1.0
                if time.monotonic() >= settle:
                    break
    finally:
        consumer.close()
    return messages


def config(pg_url: str, schema: str, **extra: object) -> dict[str, object]:
    """Target settings for one test's schema."""
    return {"database_url": pg_url, "default_target_schema": schema, **extra}


def rows(conn: psycopg.Connection, schema: str, table: str, order: str = "id") -> list[tuple]:
    """The table's rows, or [] while the table does not exist yet."""
    exists = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, table)
    ).fetchone()
    if exists is None or exists[0] is None:
        return []
    query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(
        sql.Identifier(schema, table), sql.Identifier(order)
    )
    return conn.execute(query).fetchall()
