"""`decode_workers`: the tap decoding in worker processes writes what it writes alone.

Every test of test_tap.py also runs with two decode workers; these cover what
only workers add: many batches in flight at once over a mixed corpus, a bad
entry behind batches still decoding, a worker that dies, and a tap that dies
under its workers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as redis_lib
import zstandard

from tap_redis_stream.decode_pool import DecodePool, DecodeWorkerFailed
from tap_redis_stream.entries.euler_kv import EulerKvDecoder
from tap_redis_stream.entry_id import EntryId
from tap_redis_stream.reconnect import StopWhileUnavailable
from tests import kv_changes, kv_workload
from tests.integration.tap_helpers import TAP_BIN, TapRun, in_process_reader, run_tap
from tests.integration.test_tap import POISON, SPEC_CREATE
from tests.servers import free_port

SHARDS = 3


def seed_mixed(client: redis_lib.Redis, base: str) -> dict[str, list[str]]:
    """Creates, updates and deletes (some zstd-framed) over SHARDS keys, a poison
    entry every 37th and an entry with a repeated field name; the IDs per key."""
    changes = kv_changes.changes(1200, seed=3, schema="s")
    creates = list(kv_workload.creates(300, seed=9, stream_base=base, shards=SHARDS, compress=True))
    compress = zstandard.ZstdCompressor().compress
    ids: dict[str, list[str]] = {}
    pipe = client.pipeline(transaction=False)
    for n, change in enumerate(changes):
        key = f"{base}{{shard-{n % SHARDS}}}"
        if n % 37 == 36:
            payload, _ = POISON[n % len(POISON)]
            pipe.xadd(key, {"command": payload})
        elif n == 500:
            pipe.execute_command("XADD", key, "*", "command", change.payload, "command", b"x")
        else:
            payload = compress(change.payload) if n % 3 == 0 else change.payload
            pipe.xadd(key, {"command": payload})
        if n % 4 == 0:
            create = creates[n // 4]
            pipe.xadd(create.stream_key, {"command": create.payload})
    pipe.execute()
    for shard in range(SHARDS):
        key = f"{base}{{shard-{shard}}}"
        entries: Any = client.xrange(key)
        ids[key] = [entry_id.decode() for entry_id, _ in entries]
    return ids


def tap_config(redis_url: str, base: str, failed: str, **extra: Any) -> dict[str, Any]:
    return {
        "redis_url": redis_url,
        "stream_keys": [f"{base}{{shard-*}}"],
        "entry_format": "euler_kv",
        "on_parse_error": "dead_letter",
        "failed_stream": failed,
        **extra,
    }


def letters(client: redis_lib.Redis, stream: str) -> list[dict[bytes, bytes]]:
    """A failed-entries stream's entries, without the time each was moved."""
    entries: Any = client.xrange(stream)
    return [{k: v for k, v in fields.items() if k != b"failed_at"} for _, fields in entries]


def assert_states_follow_records(run: TapRun) -> None:
    """No STATE passes an entry whose RECORD (or dead letter) was not written before it:
    a key's bookmark is at most the last entry ID written for it so far, unless the
    entries between were moved to the failed stream (checked by the caller)."""
    written: dict[str, EntryId] = {}
    for message in run.messages:
        if message["type"] == "RECORD":
            record = message["record"]
            key = record["_sdc_source_stream"]
            written[key] = EntryId.parse(record["_sdc_source_entry_id"])
        elif message["type"] == "STATE":
            for key, bookmark in message["value"]["stream_ids"].items():
                if key in written:
                    assert EntryId.parse(bookmark) >= written[key]


@pytest.mark.parametrize(("workers", "read_count"), [(2, 25), (3, 7)])
def test_workers_write_what_the_tap_writes_alone(
    tmp_path, redis_url, redis_client, unique, workers, read_count
):
    base = f"dw-{unique}"
    ids = seed_mixed(redis_client, base)
    alone_failed, pool_failed = f"failed-a-{unique}", f"failed-p-{unique}"
    alone = run_tap(tmp_path, tap_config(redis_url, base, alone_failed, read_count=read_count))
    pooled = run_tap(
        tmp_path,
        tap_config(redis_url, base, pool_failed, read_count=read_count, decode_workers=workers),
    )
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert pooled.returncode == 0, pooled.stderr[-2000:]

    def without_states(run: TapRun) -> list[dict[str, Any]]:
        return [m for m in run.messages if m["type"] != "STATE"]

    # The same SCHEMA and RECORD messages, in the same order (SCHEMA before the
    # records that need it), and the same final bookmarks: every entry.
    assert without_states(pooled) == without_states(alone)
    assert len(alone.records) > 1000
    assert {m["type"] for m in alone.messages} == {"SCHEMA", "RECORD", "STATE"}
    assert (
        pooled.states[-1]
        == alone.states[-1]
        == {"stream_ids": {key: key_ids[-1] for key, key_ids in ids.items()}}
    )
    # The same failed entries, moved once each, with the same reasons.
    moved = letters(redis_client, alone_failed)
    assert len(moved) == 1200 // 37 + 1
    assert letters(redis_client, pool_failed) == moved
    assert_states_follow_records(pooled)
    assert len(pooled.states) >= sum(len(key_ids) for key_ids in ids.values()) // (
        read_count * SHARDS
    )


def test_a_bad_entry_behind_batches_in_flight_stops_the_tap_before_it(
    tmp_path, redis_url, redis_client, unique
):
    """With `on_parse_error: stop`, the batches read after the bad entry's are
    decoding when it is found: none of their records is written, and the last
    STATE is the entry before the bad one."""
    key = f"dws-{unique}"
    good = orjson.dumps(SPEC_CREATE)
    ids = [redis_client.xadd(key, {"command": good}).decode() for _ in range(23)]
    bad = redis_client.xadd(key, {"command": b"not json"}).decode()
    for _ in range(40):
        redis_client.xadd(key, {"command": good})
    run = run_tap(
        tmp_path,
        {"redis_url": redis_url, "stream_keys": [key], "read_count": 5, "decode_workers": 3},
    )
    assert run.returncode != 0
    assert f"stream {key!r}, entry {bad}: " in run.stderr
    assert run.entry_ids() == ids
    assert run.states[-1] == {"stream_ids": {key: ids[-1]}}
    assert_states_follow_records(run)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (as an orphan may be in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _following_tap(
    tmp_path: Path, redis_url: str, redis_client: redis_lib.Redis, key: str, **extra: Any
) -> subprocess.Popen[bytes]:
    """A tap in follow mode with two decode workers, once it wrote a record."""
    redis_client.xadd(key, {"command": orjson.dumps(SPEC_CREATE)})
    cfg = tmp_path / "follow.json"
    settings = {
        "redis_url": redis_url,
        "stream_keys": [key],
        "follow": True,
        "heartbeat_seconds": 0.2,
        "decode_workers": 2,
        **extra,
    }
    cfg.write_text(json.dumps(settings))
    proc = subprocess.Popen(
        [str(TAP_BIN), "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    while json.loads(proc.stdout.readline())["type"] != "RECORD":
        pass
    return proc


def test_workers_exit_when_the_tap_is_killed(tmp_path, redis_url, redis_client, unique):
    proc = _following_tap(tmp_path, redis_url, redis_client, f"dwk-{unique}")
    workers = _children(proc.pid)
    assert len(workers) == 2
    assert all(map(_alive, workers))
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, workers))


def _tcp_socket_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                inodes.add(line.split()[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def test_workers_hold_neither_the_redis_connection_nor_the_metrics_port(
    tmp_path, redis_url, redis_client, unique
):
    """The workers are forked before the tap connects and before the metrics
    server's thread starts: no TCP socket of the tap's is theirs too, and no
    thread was running to leave a lock held in them."""
    proc = _following_tap(
        tmp_path, redis_url, redis_client, f"dwf-{unique}", metrics_port=free_port()
    )
    try:
        tcp = _tcp_socket_inodes()
        tap_tcp = _socket_inodes(proc.pid) & tcp
        assert len(tap_tcp) >= 2, "the tap's Redis connection and metrics port were not found"
        workers = _children(proc.pid)
        assert len(workers) == 2
        for worker in workers:
            assert not _socket_inodes(worker) & tcp, f"worker {worker} holds a TCP socket"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_worker_that_dies_stops_the_run_naming_it():
    pool = DecodePool(2, EulerKvDecoder(), set())
    pool.start()
    try:
        payload = orjson.dumps(SPEC_CREATE)
        batch = [("k", [(EntryId(1, 0), {b"command": payload})])]
        pool.submit(batch)
        _, decoded = pool.result()
        assert decoded.records == [1]
        assert decoded.lines.count(b"\n") == 1
        os.kill(pool._pids[1], signal.SIGKILL)
        while _alive(pool._pids[1]):
            time.sleep(0.01)
        with pytest.raises(DecodeWorkerFailed, match=r"decode worker 1 \(pid \d+\) was killed"):
            pool.submit(batch)  # worker 1's turn: its pipe is closed
    finally:
        pool.close()


def test_a_stop_while_redis_is_away_ends_at_the_entry_it_could_not_move(
    redis_url, redis_client, unique
):
    """SIGTERM during a Redis outage ends the run with the state so far, after the
    batches in the workers are applied. One of them holds an entry to move to the
    failed stream, which needs the Redis that is away: the run still ends
    cleanly, its last STATE before that entry, every record before it written
    and none after."""
    key = f"dwu-{unique}"
    ids = [redis_client.xadd(key, {"table": "t", "id": str(n)}).decode() for n in range(30)]
    bad = redis_client.execute_command("XADD", key, "*", "table", "t", "a", "1", "a", "2").decode()
    for n in range(30, 60):
        redis_client.xadd(key, {"table": "t", "id": str(n)})
    out = io.BytesIO()
    # Batches of 7: the 5th holds the bad entry, and is in a worker when the
    # 6th read finds Redis away and the stop requested.
    reader = in_process_reader(
        redis_url, [key], out, read_count=7, decode_workers=2, on_parse_error="dead_letter"
    )
    real_read = reader.client.read
    reads = 0

    def read(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        if reads == 6:
            raise StopWhileUnavailable("stopped while Redis was away")
        return real_read(*args, **kwargs)

    def redis_away(*_: Any) -> None:
        raise StopWhileUnavailable("stopped while Redis was away")

    reader.client.read = read  # type: ignore[method-assign]
    reader.client.dead_letter = redis_away  # type: ignore[method-assign,assignment]
    reader.run()  # returns: the stop is not an error
    reader.writer.state(reader.state())  # as sync_all ends
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    records = [m["record"]["_sdc_source_entry_id"] for m in messages if m["type"] == "RECORD"]
    assert reads == 6
    assert records == ids
    assert messages[-1] == {"type": "STATE", "value": {"stream_ids": {key: ids[-1]}}}
    assert bad not in json.dumps(messages)
