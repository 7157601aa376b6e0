"""Running `tap-redis-stream | target-batched-postgres` for the fault harness, and its servers.

A `Pipeline` runs the two plugins as real processes, resuming each run from
the last STATE the target printed (as Meltano would), and can SIGKILL either
one at a named fault point (DRAINER_FAULT_POINT, see
target_batched_postgres/faults.py) or after a delay. `restart` crashes and
restarts a server started by tests.servers; `read_topics` reads Kafka topics
back; the Meltano helpers run the same plugins through `meltano run`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests import fault_workload as fw
from tests.servers import Server, _wait_for_kafka, _wait_for_port, _wait_for_postgres

BIN = Path(sys.executable).parent
TAP_BIN = BIN / "tap-redis-stream"
TARGET_BIN = BIN / "target-batched-postgres"
RUN_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class Kill:
    """SIGKILL the tap or the target at a named fault point (n-th pass) or after a delay."""

    process: str  # "tap" | "target"
    point: str | None = None
    after: int = 1
    delay: float = 0.0

    def __str__(self) -> str:
        where = f"{self.point}#{self.after}" if self.point else f"t+{self.delay:.2f}s"
        return f"{self.process}@{where}"


@dataclass
class Run:
    """One tap | target run: how it ended and every STATE the target printed."""

    kill: Kill | None
    killed: bool
    tap_rc: int | None
    target_rc: int | None
    states: list[tuple[dt.datetime, dict[str, Any]]]
    seconds: float
    logs: Path

    @property
    def clean(self) -> bool:
        return not self.killed and self.tap_rc == 0 and self.target_rc == 0

    def stderr(self, process: str) -> str:
        return (self.logs / f"{process}.log").read_text(errors="replace")


def _env_without_faults(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAINER_FAULT_")}
    return {**env, **extra}


class Pipeline:
    """`tap-redis-stream | target-batched-postgres`, resuming from the last STATE printed."""

    def __init__(self, workdir: Path, tap_config: dict[str, Any], target_config: dict[str, Any]):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.tap_config = workdir / "tap.json"
        self.target_config = workdir / "target.json"
        self.tap_config.write_text(json.dumps(tap_config))
        self.target_config.write_text(json.dumps(target_config))
        self.state: dict[str, Any] | None = None
        self.runs: list[Run] = []

    def run(
        self,
        kill: Kill | None = None,
        *,
        during: Callable[[], None] | None = None,
        timeout: float = RUN_TIMEOUT_SECONDS,
    ) -> Run:
        """One run; `during` is called (in a thread) once the target printed two STATEs."""
        logs = self.workdir / f"run-{len(self.runs)}"
        logs.mkdir()
        tap_cmd = [str(TAP_BIN), "--config", str(self.tap_config)]
        if self.state is not None:
            (logs / "state.json").write_text(json.dumps(self.state))
            tap_cmd += ["--state", str(logs / "state.json")]
        env = {"tap": _env_without_faults({}), "target": _env_without_faults({})}
        if kill is not None and kill.point is not None:
            env[kill.process] |= {
                "DRAINER_FAULT_POINT": kill.point,
                "DRAINER_FAULT_AFTER": str(kill.after),
            }
        started = time.monotonic()
        states: list[tuple[dt.datetime, dict[str, Any]]] = []
        with (logs / "tap.log").open("wb") as tap_err, (logs / "target.log").open("wb") as tgt_err:
            tap = subprocess.Popen(tap_cmd, stdout=subprocess.PIPE, stderr=tap_err, env=env["tap"])
            target = subprocess.Popen(
                [str(TARGET_BIN), "--config", str(self.target_config)],
                stdin=tap.stdout,
                stdout=subprocess.PIPE,
                stderr=tgt_err,
                env=env["target"],
            )
            assert tap.stdout is not None
            assert target.stdout is not None
            tap.stdout.close()  # the tap alone holds the pipe: it sees the target die
            reader = threading.Thread(target=_read_states, args=(target.stdout, states))
            reader.start()
            victim = {"tap": tap, "target": target}[kill.process] if kill else None
            timer = None
            if kill is not None and kill.point is None and victim is not None:
                timer = threading.Timer(kill.delay, _sigkill, args=(victim,))
                timer.start()
            helper = None
            if during is not None:
                helper = threading.Thread(target=_after_states, args=(states, 2, during, target))
                helper.start()
            try:
                target.wait(timeout)
                tap.wait(timeout)
            except subprocess.TimeoutExpired:
                _sigkill(tap)
                _sigkill(target)
                raise RuntimeError(f"run {logs} did not end within {timeout} s") from None
            finally:
                if timer is not None:
                    timer.cancel()
                reader.join(30)
                if helper is not None:
                    helper.join(120)
        run = Run(
            kill,
            victim is not None and victim.returncode == -signal.SIGKILL,
            tap.returncode,
            target.returncode,
            states,
            time.monotonic() - started,
            logs,
        )
        if states:
            self.state = states[-1][1]
        self.runs.append(run)
        return run

    def run_to_completion(self, attempts: int = 3) -> Run:
        for _ in range(attempts):
            run = self.run()
            if run.clean:
                return run
        raise RuntimeError(
            f"no clean run in {attempts} attempts: {run.logs}\n"
            f"target: {log_tail(run.stderr('target'))}\ntap: {log_tail(run.stderr('tap'))}"
        )


def log_tail(log: str, lines: int = 25) -> str:
    """The end of a log, without the METRIC lines."""
    kept = [line for line in log.splitlines() if "METRIC" not in line]
    return "\n".join(kept[-lines:])


def _read_states(out: IO[bytes], states: list[tuple[dt.datetime, dict[str, Any]]]) -> None:
    for line in out:
        seen = dt.datetime.now(dt.UTC)
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict) and isinstance(value.get("stream_ids"), dict):
                states.append((seen, value))


def _after_states(
    states: list[Any], count: int, action: Callable[[], None], target: subprocess.Popen[bytes]
) -> None:
    """Wait until `count` STATEs arrived (or the target ended), then act."""
    while len(states) < count and target.poll() is None:
        time.sleep(0.02)
    action()


def _sigkill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)


# -- servers ----------------------------------------------------------------------


@dataclass
class Servers:
    postgres: str
    redis: str
    kafka: str


def restart(server: Server, sig: int = signal.SIGKILL, down_seconds: float = 0.0) -> None:
    """Stop a server we started with `sig`, then start the same command on the same port.

    PostgreSQL keeps its data folder (an immediate shutdown is a crash its WAL
    recovers from); Redis keeps what its append-only file holds; Tansu, memory
    only, comes back empty.
    """
    if server.external or server.proc is None or server.workdir is None:
        raise RuntimeError(f"cannot restart external {server.name}")
    argv = [str(a) for a in server.proc.args]  # type: ignore[union-attr]
    server.proc.send_signal(sig)
    server.proc.wait(timeout=30)
    time.sleep(down_seconds)
    log = server.workdir / f"{server.name}-restart.log"
    with log.open("ab") as out:
        server.proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=server.workdir
        )
    _wait_for_port(server.port, server.proc, server.name, log)
    if server.name == "postgres":
        _wait_for_postgres(server.url, server.proc, log)
    elif server.name == "kafka":
        _wait_for_kafka(server.url, server.proc, log)


def read_topics(
    bootstrap: str, topics: Sequence[str], *, quiet_seconds: float = 1.5, timeout: float = 90.0
) -> list[fw.KafkaMessage]:
    """Every message of the topics, from the beginning.

    Read until every partition passed its high watermark and nothing new came
    for `quiet_seconds`: Tansu 0.6 reports a high watermark that can lag
    behind the last record of a multi-record batch, so it is only a floor.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"fault-harness-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(timeout=15)
        floors: dict[tuple[str, int], int] = {}
        for topic in topics:
            if topic in metadata.topics:
                for partition in metadata.topics[topic].partitions:
                    high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 15)[1]
                    floors[(topic, partition)] = high
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in floors])
        floors = {place: high for place, high in floors.items() if high > 0}
        messages: list[fw.KafkaMessage] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                if not floors and time.monotonic() - last_new >= quiet_seconds:
                    return messages
                continue
            last_new = time.monotonic()
            raw: Any = msg.headers() or []
            headers = {str(k): bytes(v) for k, v in raw if v is not None}
            value: Any = msg.value() or b""
            messages.append(fw.KafkaMessage(str(msg.topic()), bytes(value), headers))
            place = (str(msg.topic()), int(msg.partition() or 0))
            if place in floors and (msg.offset() or 0) + 1 >= floors[place]:
                del floors[place]
        raise RuntimeError(
            f"Kafka partitions not read to their end in {timeout} s: {sorted(floors)}"
        )
    finally:
        consumer.close()


# -- Meltano ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def meltano_bin() -> Path:
    return Path(os.environ.get("MELTANO_BIN", ROOT / ".venv-meltano" / "bin" / "meltano"))


def prepare_meltano_project(path: Path) -> Path:
    """A Meltano project with this repository's two plugins (`meltano install`ed)."""
    import yaml

    spec = yaml.safe_load((ROOT / "meltano.yml").read_text())
    for plugins in spec["plugins"].values():
        for plugin in plugins:
            plugin["pip_url"] = f"-e {ROOT}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "meltano.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    meltano_run(path, {}, "install", check=True)
    return path


def meltano_run(
    project: Path, env: Mapping[str, str], *args: str, check: bool = False
) -> subprocess.CompletedProcess[str]:
    binary = meltano_bin()
    result = subprocess.run(
        [str(binary), *args],
        cwd=project,
        env={
            **_env_without_faults(env),
            "PATH": f"{binary.parent}:{os.environ['PATH']}",
            "MELTANO_DATABASE_URI": f"sqlite:///{project}/.meltano/meltano.db",
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"meltano {' '.join(args)} failed: {result.stderr[-3000:]}")
    return result


def meltano_state(project: Path, suffix: str) -> dict[str, Any] | None:
    listed = meltano_run(project, {}, "state", "list", check=True).stdout.split()
    state_id = next((s for s in listed if s.endswith(f":{suffix}")), None)
    if state_id is None:
        return None
    got = json.loads(meltano_run(project, {}, "state", "get", state_id, check=True).stdout)
    return dict(got.get("singer_state") or got)
