"""Scaling out: N tap workers over 16 shard keys on a real 3-primary Redis Cluster.

Exactly once across workers, a killed worker resumed from its last STATE,
re-sharding with Meltano's own state commands, the old drainer's shard locks,
the metrics endpoint while following, and a Redis restart mid-follow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from redis.cluster import RedisCluster

from tap_redis_stream.client import StreamClient
from tap_redis_stream.entry_id import ZERO, EntryId
from tap_redis_stream.lag import LagTracker
from tests import kv_workload
from tests.integration.tap_helpers import TAP_BIN, TapRun
from tests.integration.target_helpers import TARGET_BIN, states_of, write_config
from tests.integration.target_helpers import config as target_config
from tests.servers import Cluster, free_port, start_redis

SHARDS = 16
ROOT = Path(__file__).resolve().parents[2]
MELTANO = Path(os.environ.get("MELTANO_BIN", ROOT / ".venv-meltano" / "bin" / "meltano"))
STATE_ID = "dev:tap-redis-stream-to-target-batched-postgres"

Seeded = list[tuple[str, str]]  # (stream key, entry ID)


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster.url)
    yield client
    client.close()


def shard_keys(base: str) -> list[str]:
    return [f"{base}{{shard-{i}}}" for i in range(SHARDS)]


def seed(client: Any, base: str, per_key: int, round_: int = 0) -> Seeded:
    """`per_key` euler_kv Creates on each of the 16 shard keys (round-robin, distinct ids)."""
    n = per_key * SHARDS
    entries = list(kv_workload.creates(n * (round_ + 1), seed=7, stream_base=base, shards=SHARDS))
    entries = entries[n * round_ :]
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(entry.stream_key, {"command": entry.payload})
    ids = pipe.execute()
    return [(e.stream_key, i.decode()) for e, i in zip(entries, ids, strict=True)]


def owner(key: str, count: int) -> int:
    return zlib.crc32(key.encode()) % count


def tap_config(url: str, base: str, **extra: object) -> dict[str, object]:
    return {"redis_url": url, "stream_keys": [f"{base}{{shard-*}}"], **extra}


def spawn(tmp_path: Path, name: str, config: dict[str, Any], state: Any = None) -> subprocess.Popen:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    command = [str(TAP_BIN), "--config", str(path)]
    if state is not None:
        state_path = tmp_path / f"{name}.state.json"
        state_path.write_text(json.dumps(state))
        command += ["--state", str(state_path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def collect(proc: subprocess.Popen, timeout: float = 120) -> TapRun:
    out, err = proc.communicate(timeout=timeout)
    messages = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    return TapRun(proc.returncode, messages, err.decode())


def run_workers(
    tmp_path: Path, configs: list[dict[str, Any]], states: list[Any] | None = None
) -> list[TapRun]:
    """The workers as separate tap processes, all at once."""
    stamp = time.monotonic_ns()
    procs = [
        spawn(tmp_path, f"w{i}-{stamp}", cfg, (states or [None] * len(configs))[i])
        for i, cfg in enumerate(configs)
    ]
    with ThreadPoolExecutor(len(procs)) as pool:
        runs = list(pool.map(collect, procs))
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    return runs


def read_pairs(run: TapRun) -> list[tuple[str, str]]:
    return [(r["_sdc_source_stream"], r["_sdc_source_entry_id"]) for r in run.records]


def assert_exactly_once(seen: list[tuple[str, str]], seeded: Seeded) -> None:
    twice = [pair for pair, n in Counter(seen).items() if n > 1]
    assert not twice, f"read more than once: {twice[:5]}"
    assert sorted(seen) == sorted(seeded)


def sharded_configs(url: str, base: str, workers: int, **extra: object) -> list[dict[str, Any]]:
    return [
        tap_config(url, base, shard_index=i, shard_count=workers, **extra) for i in range(workers)
    ]


@pytest.mark.parametrize(
    ("workers", "mode"), [(2, "auto"), (4, "cluster")], ids=["2-workers", "4-workers"]
)
def test_workers_on_a_cluster_read_every_entry_exactly_once(
    tmp_path, redis_cluster, cluster, unique, workers, mode
):
    base = f"w{workers}-{unique}"
    keys = shard_keys(base)
    nodes = {cluster.get_node_from_key(k).name for k in keys}
    if not redis_cluster.external:
        assert len(nodes) == 3  # hash tags spread the shards over every primary
    assert {owner(k, workers) for k in keys} == set(range(workers))  # every worker has keys
    seeded = seed(cluster, base, per_key=25)
    configs = sharded_configs(redis_cluster.url, base, workers, read_count=7, redis_mode=mode)
    first = run_workers(tmp_path, configs)

    for index, run in enumerate(first):
        mine = {k for k in keys if owner(k, workers) == index}
        assert {key for key, _ in read_pairs(run)} == mine
        last = {k: max((i for kk, i in seeded if kk == k), key=EntryId.parse) for k in mine}
        assert run.states[-1] == {"stream_ids": last}  # its own keys only
        assert "Redis Cluster" in run.stderr
    assert_exactly_once([p for run in first for p in read_pairs(run)], seeded)

    # A second round resumes from each worker's state and reads only the new entries.
    more = seed(cluster, base, per_key=5, round_=1)
    second = run_workers(tmp_path, configs, [run.states[-1] for run in first])
    assert_exactly_once([p for run in second for p in read_pairs(run)], more)


def meltano(project: Path, *args: str) -> str:
    result = subprocess.run(
        [str(MELTANO), *args],
        cwd=project,
        env={**os.environ, "MELTANO_DATABASE_URI": f"sqlite:///{project}/meltano.db"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_adding_a_worker_with_merged_meltano_states_reads_nothing_twice(
    tmp_path, redis_cluster, cluster, unique
):
    """The README recipe: stop the workers, merge every old worker's state into
    every new worker's state ID (`meltano state merge --from-state-id`), restart
    with the new count. States hold own keys only, so the merge is a plain union."""
    if not MELTANO.exists():
        pytest.fail(f"{MELTANO} is missing: run `make meltano` (make test does)")
    base = f"rs-{unique}"
    round1 = seed(cluster, base, per_key=10)
    two = run_workers(tmp_path, sharded_configs(redis_cluster.url, base, 2, read_count=4))
    s0, s1 = (run.states[-1]["stream_ids"] for run in two)
    assert not set(s0) & set(s1)

    project = tmp_path / "meltano"
    project.mkdir()
    shutil.copy(ROOT / "meltano.yml", project / "meltano.yml")
    ids = [f"{STATE_ID}:worker-{i}" for i in range(3)]
    for state_id, run in zip(ids, two, strict=False):  # what `meltano run` stored
        meltano(project, "state", "set", "--force", state_id, json.dumps({"singer_state": run.states[-1]}))  # fmt: skip
    for new in ids:
        for old in ids[:2]:
            if old != new:
                meltano(project, "state", "merge", "--from-state-id", old, new)
    with ThreadPoolExecutor(3) as pool:  # reads only: safe side by side
        got = list(pool.map(lambda i: meltano(project, "state", "get", i), ids))
    merged = [json.loads(text)["singer_state"] for text in got]
    assert all(m == {"stream_ids": s0 | s1} for m in merged)

    round2 = seed(cluster, base, per_key=10, round_=1)
    three = run_workers(tmp_path, sharded_configs(redis_cluster.url, base, 3), merged)
    assert_exactly_once([p for run in two + three for p in read_pairs(run)], round1 + round2)
    for index, run in enumerate(three):
        assert all(owner(k, 3) == index for k in run.states[-1]["stream_ids"])
        assert "other workers own" in run.stderr

    # The new worker's keys all moved: without the merge it would read them from 0-0.
    moved = [k for k in shard_keys(base) if owner(k, 3) == 2]
    assert moved
    assert all(k in s0 or k in s1 for k in moved)


def table_counts(conn: psycopg.Connection, schema: str) -> dict[str, tuple[int, int]]:
    counts = {}
    for table in kv_workload.TABLES:
        query = sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(
            sql.Identifier(schema, table.name)
        )
        row = conn.execute(query).fetchone()
        assert row is not None
        counts[table.name] = (int(row[0]), int(row[1]))
    return counts


def pipeline(tmp_path: Path, tap_cfg: dict[str, Any], target_cfg: Path, state: Any = None) -> Any:
    """tap | target to the end; the target's last STATE (what Meltano would store)."""
    tap = spawn(tmp_path, f"p-{time.monotonic_ns()}", tap_cfg, state)
    target = subprocess.run(
        [str(TARGET_BIN), "--config", str(target_cfg)],
        stdin=tap.stdout,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert tap.wait(timeout=60) == 0
    assert target.returncode == 0, target.stderr[-3000:]
    return states_of(target.stdout.decode())[-1]


def test_a_killed_worker_resumed_from_its_last_state_loses_nothing(
    tmp_path, redis_cluster, cluster, unique, pg_url, pg_schema, pg_conn
):
    base = f"k-{unique}"
    seeded = seed(cluster, base, per_key=30)
    configs = sharded_configs(redis_cluster.url, base, 2, read_count=3)
    target_cfg = write_config(tmp_path, target_config(pg_url, pg_schema, insert_batch_size=50))
    pipeline(tmp_path, configs[1], target_cfg)  # the other worker, undisturbed

    # Worker 0: its output relayed to the target line by line; SIGKILL after its 6th STATE.
    tap = spawn(tmp_path, "killed", configs[0])
    target = subprocess.Popen(
        [str(TARGET_BIN), "--config", str(target_cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert tap.stdout is not None
    assert target.stdin is not None
    relayed: list[dict[str, Any]] = []
    states = 0
    for line in tap.stdout:
        target.stdin.write(line)
        relayed.append(json.loads(line))
        states += relayed[-1]["type"] == "STATE"
        if states == 6:
            tap.kill()
            break
    tap.wait(timeout=30)
    target.stdin.close()
    out = target.stdout.read() if target.stdout else b""
    assert target.wait(timeout=60) == 0
    last_state = relayed[-1]["value"]
    assert states_of(out.decode())[-1] == last_state  # durable up to the tap's last STATE
    before_kill = [
        (m["record"]["_sdc_source_stream"], m["record"]["_sdc_source_entry_id"])
        for m in relayed
        if m["type"] == "RECORD"
    ]
    mine = [p for p in seeded if owner(p[0], 2) == 0]
    assert 0 < len(before_kill) < len(mine)  # killed mid-run

    # Restarted from that state: the rest of worker 0's entries, nothing before its bookmarks.
    resumed = spawn(tmp_path, "resumed", configs[0], last_state)
    rerun = collect(resumed)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    again = read_pairs(rerun)
    assert sorted(set(before_kill) | set(again)) == sorted(mine)  # nothing lost
    bookmarks = {k: EntryId.parse(v) for k, v in last_state["stream_ids"].items()}
    for key, entry_id in again:
        assert EntryId.parse(entry_id) > bookmarks.get(key, ZERO)  # nothing the state covers

    # Through the target: every row exactly once in the primary-keyed tables.
    pipeline(tmp_path, configs[0], target_cfg, last_state)
    expected = Counter(
        c.table.name for c in kv_workload.creates(len(seeded), seed=7, stream_base=base, shards=16)
    )
    assert table_counts(pg_conn, pg_schema) == {t: (n, n) for t, n in expected.items()}


def lock_keys(client: Any, base: str) -> dict[str, str]:
    found = client.scan_iter(match=f"{base}*_lock", count=1000)
    return {k.decode(): client.get(k).decode() for k in found}


def test_a_held_drainer_lock_skips_its_shard_and_the_tap_releases_its_own(
    tmp_path, redis_cluster, cluster, unique
):
    base = f"l-{unique}"
    seeded = seed(cluster, base, per_key=5)
    held = f"{base}{{shard-3}}"
    cluster.set(f"{held}_lock", "LOCKED", px=60_000)  # the old drainer, mid-batch
    cfg = tap_config(redis_cluster.url, base, shard_locks=True, read_count=2)
    first = run_workers(tmp_path, [cfg])[0]
    assert sorted(read_pairs(first)) == sorted(p for p in seeded if p[0] != held)
    assert f"Skipping stream {held!r} this round: its lock '{held}_lock' is held by 'LOCKED'" in (
        first.stderr
    )
    assert '"metric":"shard_lock_skipped"' in first.stderr
    assert held not in first.states[-1]["stream_ids"]
    assert "Released 15 of 15 shard lock(s)" in first.stderr
    assert lock_keys(cluster, base) == {f"{held}_lock": "LOCKED"}  # ours are gone, theirs kept

    cluster.delete(f"{held}_lock")  # the drainer finished its batch
    second = run_workers(tmp_path, [cfg], [first.states[-1]])[0]
    assert sorted(read_pairs(second)) == sorted(p for p in seeded if p[0] == held)
    assert lock_keys(cluster, base) == {}


def test_failed_stream_and_trimming_on_a_cluster(tmp_path, redis_cluster, cluster, unique):
    base = f"d-{unique}"
    seeded = seed(cluster, base, per_key=3)
    poisoned = f"{base}{{shard-9}}"
    bad = cluster.xadd(poisoned, {"command": b"not json"}).decode()
    failed = f"failed-{unique}"
    cfg = tap_config(redis_cluster.url, base, on_parse_error="dead_letter", failed_stream=failed)
    first = run_workers(tmp_path, [cfg])[0]
    assert sorted(read_pairs(first)) == sorted(seeded)
    [(_, letter)] = cluster.xrange(failed)
    assert letter[b"source_stream"].decode() == poisoned
    assert letter[b"source_entry_id"].decode() == bad
    assert letter[b"field:command"] == b"not json"
    assert first.states[-1]["stream_ids"][poisoned] == bad

    # The next run trims what that state proves durable, on every node.
    again = run_workers(tmp_path, [{**cfg, "trim_acknowledged": True}], [first.states[-1]])[0]
    assert again.records == []
    assert all(cluster.xlen(key) == 0 for key in shard_keys(base))


class Follower:
    """A follow-mode tap whose stdout is read by a thread."""

    def __init__(self, tmp_path: Path, config: dict[str, Any]) -> None:
        self.proc = spawn(tmp_path, f"f-{time.monotonic_ns()}", config)
        self.messages: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.messages.append(json.loads(line))

    def pairs(self) -> list[tuple[str, str]]:
        return [
            (m["record"]["_sdc_source_stream"], m["record"]["_sdc_source_entry_id"])
            for m in list(self.messages)
            if m["type"] == "RECORD"
        ]

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._thread.join(timeout=10)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read().decode()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def scrape(port: int) -> dict[tuple[str, str], float]:
    """`/metrics` as {(sample name, stream_key label or ""): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, sample.labels.get("stream_key", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_show_per_shard_lag_going_to_zero_and_sigterm_releases_the_locks(
    tmp_path, redis_cluster, cluster, unique
):
    base = f"m-{unique}"
    seeded = seed(cluster, base, per_key=20)
    held = f"{base}{{shard-5}}"
    cluster.set(f"{held}_lock", "LOCKED", px=60_000)
    port = free_port()
    follower = Follower(
        tmp_path,
        tap_config(
            redis_cluster.url,
            base,
            follow=True,
            heartbeat_seconds=0.3,
            shard_locks=True,
            shard_lock_ttl_ms=3000,
            metrics_port=port,
            read_count=5,
        ),
    )
    try:
        lag = "tap_redis_stream_lag_entries"
        keys = shard_keys(base)

        def lags() -> dict[str, float]:
            try:
                metrics = scrape(port)
            except OSError:
                return {}
            return {k: metrics[(lag, k)] for k in keys if (lag, k) in metrics}

        # Every shard it holds drains to zero; the locked one stays at its 20 entries.
        wait_for("lag 0 on 15 shards", lambda: lags() == {k: 0 if k != held else 20 for k in keys})
        metrics = scrape(port)
        assert metrics[("tap_redis_stream_shard_locks_held", "")] == 15
        assert metrics[("tap_redis_stream_shard_lock_skips_total", held)] >= 1
        assert metrics[("tap_redis_stream_entries_read_total", keys[0])] == 20
        assert metrics[("tap_redis_stream_redis_connected", "")] == 1
        assert health(port) == (200, "ok: running\n")
        tokens = lock_keys(cluster, base)
        assert tokens.pop(f"{held}_lock") == "LOCKED"
        assert len(tokens) == 15
        assert all(v.startswith("tap-redis-stream:") for v in tokens.values())

        cluster.delete(f"{held}_lock")  # the drainer lets go: the tap takes the shard over
        wait_for("lag 0 everywhere", lambda: lags() == dict.fromkeys(keys, 0))
        more = seed(cluster, base, per_key=2, round_=1)
        wait_for("new entries read", lambda: len(follower.pairs()) == len(seeded) + len(more))
        wait_for("lag 0 after more entries", lambda: lags() == dict.fromkeys(keys, 0))
        assert scrape(port)[("tap_redis_stream_shard_locks_held", "")] == 16

        # The tap's lock expired and the drainer took it: the next refresh sees it.
        taken = keys[7]
        cluster.set(f"{taken}_lock", "LOCKED", px=60_000)
        lost = ("tap_redis_stream_shard_locks_lost_total", taken)
        wait_for("the lost lock noticed", lambda: scrape(port).get(lost) == 1)
        assert scrape(port)[("tap_redis_stream_shard_locks_held", "")] == 15
        cluster.delete(f"{taken}_lock")
        wait_for(
            "the lock taken back",
            lambda: scrape(port)[("tap_redis_stream_shard_locks_held", "")] == 16,
        )
    finally:
        code, stderr = follower.stop()
    assert code == 0, stderr[-3000:]
    assert f"Lost the lock of stream {taken!r}" in stderr
    assert_exactly_once(follower.pairs(), seeded + more)
    assert follower.messages[-1]["type"] == "STATE"
    assert len(follower.messages[-1]["value"]["stream_ids"]) == 16
    assert lock_keys(cluster, base) == {}  # released on SIGTERM
    assert "Released 16 of 16 shard lock(s)" in stderr


def test_follow_mode_rides_out_a_redis_restart(tmp_path, unique):
    server = start_redis()
    try:
        client = redis_lib.Redis.from_url(server.url)
        key = f"r-{unique}{{shard-0}}"
        first = seed_key(client, key, 3)
        port = free_port()
        follower = Follower(
            tmp_path,
            {
                "redis_url": server.url,
                "stream_keys": [key],
                "follow": True,
                "heartbeat_seconds": 0.3,
                "redis_reconnect_timeout_seconds": 60,
                "metrics_port": port,
            },
        )
        try:
            wait_for("first entries", lambda: len(follower.pairs()) == 3)
            client.save()  # the restarted server loads this dump
            client.close()
            server.kill()
            wait_for(
                "the tap to notice",
                lambda: scrape(port)[("tap_redis_stream_redis_connected", "")] == 0,
            )
            status, body = health(port)
            assert (status, body.strip()) == (200, "ok: reconnecting")

            def states() -> int:
                return sum(m["type"] == "STATE" for m in list(follower.messages))

            down = states()  # the target keeps flushing by age on these heartbeats
            wait_for("a heartbeat STATE while Redis is down", lambda: states() > down)
            time.sleep(1.0)  # a few attempts with backoff
            server = start_redis(port=server.port, workdir=server.workdir)
            client = redis_lib.Redis.from_url(server.url)
            second = seed_key(client, key, 3)
            wait_for("entries after the restart", lambda: len(follower.pairs()) == 6)
            assert health(port)[0] == 200
        finally:
            code, stderr = follower.stop()
        assert code == 0, stderr[-3000:]
        assert follower.pairs() == [(key, i) for i in first + second]
        assert f"Redis at {server.url} unavailable" in stderr
        assert f"Redis at {server.url} is back" in stderr
        client.close()
    finally:
        server.stop()


def seed_key(client: redis_lib.Redis, key: str, n: int) -> list[str]:
    entries = kv_workload.creates(n, seed=time.monotonic_ns() % 1000, stream_base="x", shards=1)
    return [EntryId.parse(client.xadd(key, {"command": e.payload})).__str__() for e in entries]


def test_redis_gone_past_the_timeout_fails_naming_the_url_without_its_password(tmp_path, unique):
    server = start_redis(extra_args=["--requirepass", "s3cret-pw"])
    try:
        url = f"redis://default:s3cret-pw@127.0.0.1:{server.port}/0"
        client = redis_lib.Redis.from_url(url)
        key = f"g-{unique}"
        seed_key(client, key, 2)
        client.close()
        follower = Follower(
            tmp_path,
            {
                "redis_url": url,
                "stream_keys": [key],
                "follow": True,
                "heartbeat_seconds": 0.3,
                "redis_reconnect_timeout_seconds": 2,
            },
        )
        wait_for("entries", lambda: len(follower.pairs()) == 2)
        server.kill()
        code = follower.proc.wait(timeout=60)
        assert follower.proc.stderr is not None
        stderr = follower.proc.stderr.read().decode()
        assert code != 0
        assert f"Redis at redis://default@127.0.0.1:{server.port}/0 unreachable for 2 s" in stderr
        assert "s3cret-pw" not in stderr
        follower._thread.join(timeout=10)
        assert follower.messages[-1]["type"] == "STATE"
        assert len(follower.messages[-1]["value"]["stream_ids"][key].split("-")) == 2
    finally:
        server.stop()


def test_lag_counts_the_entries_after_the_bookmark(redis_url, redis_client, unique):
    """The lag gauge's arithmetic (lag.py) against XRANGE counts on a real stream,
    through appends, deletions after the bookmark and trimming behind it."""
    key = f"lag-{unique}"
    ids = [EntryId.parse(redis_client.xadd(key, {"f": "v"})) for _ in range(40)]
    client = StreamClient(redis_url, mode="standalone")
    client.connect()
    tracker = LagTracker(client.count_entries)

    def check(bookmark: EntryId) -> int:
        info = client.stream_info([key])[key]
        counted = len(redis_client.xrange(key, min=f"({bookmark}", max="+"))
        lag = tracker.lag(key, bookmark, info)
        assert (lag.entries, lag.exact) == (counted, True)
        return lag.entries

    try:
        assert check(ZERO) == 40  # before the first entry: XINFO length
        assert check(ids[9]) == 30  # mid-stream, no ordinal yet: counted
        assert check(ids[-1]) == 0  # caught up: fixes the ordinal
        more = [EntryId.parse(redis_client.xadd(key, {"f": "v"})) for _ in range(5)]
        assert check(ids[-1]) == 5  # entries-added minus the ordinal
        tracker.advanced(key, 2, more[1])  # the worker read two of them
        assert check(more[1]) == 3
        redis_client.xdel(key, str(more[3]))  # deleted after the bookmark: counted again
        assert check(more[1]) == 2
        redis_client.xtrim(key, minid=str(more[1]), approximate=False)  # trimmed behind it
        assert check(more[1]) == 2  # length minus the one entry left at or before it
        assert tracker.lag(key, more[-1], client.stream_info([key])[key]).entries == 0
    finally:
        client.close()


def test_a_user_without_info_reads_a_single_server(tmp_path, redis_url, redis_client, unique):
    """redis_mode auto asks INFO cluster; an ACL user without INFO still reads."""
    user = f"reader-{unique}"
    redis_client.acl_setuser(
        user, enabled=True, passwords=["+pw-" + unique], keys=["*"], commands=["+@all", "-info"]
    )
    try:
        key = f"acl-{unique}"
        ids = seed_key(redis_client, key, 2)
        host = redis_url.removeprefix("redis://")
        run = run_workers(
            tmp_path, [{"redis_url": f"redis://{user}:pw-{unique}@{host}", "stream_keys": [key]}]
        )[0]
        assert run.entry_ids() == ids
        assert "INFO cluster failed" in run.stderr
        assert f"pw-{unique}" not in run.stderr
    finally:
        redis_client.acl_deluser(user)
