"""Throughput of 1, 2 and 4 tap workers over the same sharded workload, side by side.

    .venv/bin/python -m bench.workers [--entries 100000] [--shards 16] [--repeat 3]
                                      [--workers 1,2,4] [--standalone] [--target]

Starts its own Redis (a 3-primary Redis Cluster by default, `--standalone` for
one server), seeds `--entries` euler_kv Creates round-robin over `--shards`
keys `bench{shard-N}` (tests/kv_workload.py, the generated corpus the tests
use), then for each worker count N runs N tap processes at once
(`shard_index` 0..N-1, `shard_count` N, `read_count` 1000, bounded runs),
each writing to /dev/null, `--repeat` times. With `--target` each worker is
`tap | target-batched-postgres` into a PostgreSQL it starts (fsync on, Kafka
off, a fresh schema per run).

Prints, per N: the median wall time from spawning the workers to the last
exit, entries/s from it, the median start-up cost (the same N workers over an
empty key set: Python + singer-sdk imports, connecting), entries/s with that
subtracted, both ratios to one worker, and the CPU seconds the worker
processes used (cores = CPU s / wall s: how many cores the workers kept busy).
Also prints how the keys fell to workers (CRC32 of the key modulo N), since
the slowest worker sets the time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql
from redis.cluster import RedisCluster

from tests import kv_workload
from tests.servers import start_postgres, start_redis, start_redis_cluster

BIN = Path(sys.executable).parent
TAP = BIN / "tap-redis-stream"
TARGET = BIN / "target-batched-postgres"
BASE = "bench"


def seed(client: Any, entries: int, shards: int) -> None:
    pipe = client.pipeline(transaction=False)
    workload = kv_workload.creates(entries, seed=3, stream_base=BASE, shards=shards)
    for i, entry in enumerate(workload):
        pipe.xadd(entry.stream_key, {"command": entry.payload})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def run_workers(
    workdir: Path, url: str, pattern: str, workers: int, target: Callable[[], dict] | None
) -> tuple[float, float]:
    """Seconds from spawning `workers` taps (optionally piped into targets) to the last
    exit, and the CPU seconds those processes used."""
    procs: list[subprocess.Popen[bytes]] = []
    cpu_before = _children_cpu()
    started = time.perf_counter()
    for index in range(workers):
        config = {
            "redis_url": url,
            "stream_keys": [pattern],
            "shard_index": index,
            "shard_count": workers,
            "read_count": 1000,
        }
        path = workdir / f"tap-{index}-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(config))
        if target is None:
            procs.append(
                subprocess.Popen(
                    [str(TAP), "--config", str(path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            continue
        target_path = workdir / f"target-{index}-{uuid.uuid4().hex[:6]}.json"
        target_path.write_text(json.dumps(target()))
        tap = subprocess.Popen(
            [str(TAP), "--config", str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        procs.append(tap)
        procs.append(
            subprocess.Popen(
                [str(TARGET), "--config", str(target_path)],
                stdin=tap.stdout,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        if tap.stdout is not None:
            tap.stdout.close()  # the target owns the pipe now
    codes = [proc.wait() for proc in procs]
    elapsed = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    return elapsed, _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def key_split(shards: int, workers: int) -> list[int]:
    counts = [0] * workers
    for i in range(shards):
        counts[zlib.crc32(f"{BASE}{{shard-{i}}}".encode()) % workers] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--standalone", action="store_true", help="one Redis server, no cluster")
    parser.add_argument("--target", action="store_true", help="tap | target into PostgreSQL")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    servers: list[Any] = []
    client: Any
    try:
        if args.standalone:
            server = start_redis()
            servers.append(server)
            url, client = server.url, redis.Redis.from_url(server.url)
        else:
            cluster = start_redis_cluster()
            servers.append(cluster)
            url, client = cluster.url, RedisCluster.from_url(cluster.url)
        t0 = time.perf_counter()
        seed(client, args.entries, args.shards)
        print(f"seeded {args.entries} entries over {args.shards} keys in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip

        target: Callable[[], dict] | None = None
        if args.target:
            pg = start_postgres(durable=True)
            servers.append(pg)

            def target() -> dict:
                schema = f"bench_{uuid.uuid4().hex[:10]}"
                with psycopg.connect(pg.url, autocommit=True) as conn:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                return {"database_url": pg.url, "default_target_schema": schema}

        workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
        pattern = f"{BASE}{{shard-*}}"
        empty = f"no-such-key-{uuid.uuid4().hex[:6]}{{shard-*}}"
        results = {}
        for n in counts:
            startup = statistics.median(
                run_workers(workdir, url, empty, n, target)[0] for _ in range(args.repeat)
            )
            runs = [run_workers(workdir, url, pattern, n, target) for _ in range(args.repeat)]
            wall, cpu = min(runs, key=lambda r: abs(r[0] - statistics.median(w for w, _ in runs)))
            results[n] = (wall, startup, cpu)
        client.close()
    finally:
        for server in reversed(servers):
            server.stop()

    mode = "standalone Redis" if args.standalone else "3-primary Redis Cluster"
    sink = "tap | target (PostgreSQL, fsync on)" if args.target else "tap alone (> /dev/null)"
    print(f"{mode}; {sink}; {os.cpu_count()} CPUs; median of {args.repeat}")
    print(f"{'workers':>7} {'keys/worker':>14} {'wall s':>8} {'entries/s':>10} {'x1':>6} "
          f"{'start s':>8} {'net/s':>10} {'x1':>6} {'cpu s':>7} {'cores':>6}")  # fmt: skip
    base_wall, base_start, _ = results[counts[0]]
    base_rate = args.entries / base_wall
    base_net = args.entries / max(base_wall - base_start, 1e-9)
    for n, (wall, startup, cpu) in results.items():
        rate = args.entries / wall
        net = args.entries / max(wall - startup, 1e-9)
        split = "/".join(map(str, key_split(args.shards, n)))
        print(f"{n:>7} {split:>14} {wall:>8.2f} {rate:>10,.0f} {rate / base_rate:>6.2f} "
              f"{startup:>8.2f} {net:>10,.0f} {net / base_net:>6.2f} {cpu:>7.2f} "
              f"{cpu / wall:>6.2f}")  # fmt: skip
    print("cpu s: CPU time of the tap (and target) processes; cores: cpu s / wall s. "
          "Redis and PostgreSQL are not counted.")  # fmt: skip


if __name__ == "__main__":
    main()
