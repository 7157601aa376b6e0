"""Helpers to run tap-redis-stream as a CLI process in tests."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tap_redis_stream.client import StreamClient
from tap_redis_stream.decode_pool import DecodePool
from tap_redis_stream.entries.fields import FieldsDecoder
from tap_redis_stream.locks import ShardLocks
from tap_redis_stream.messages import MessageWriter
from tap_redis_stream.metrics_server import TapMetrics
from tap_redis_stream.reader import Reader, ReaderSettings, bookmarks_from_state

TAP_BIN = Path(sys.executable).parent / "tap-redis-stream"


@dataclass
class TapRun:
    returncode: int
    messages: list[dict[str, Any]]
    stderr: str

    @property
    def records(self) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    @property
    def states(self) -> list[Any]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "SCHEMA"]

    def entry_ids(self, key: str | None = None) -> list[str]:
        return [
            r["_sdc_source_entry_id"]
            for r in self.records
            if key is None or r["_sdc_source_stream"] == key
        ]


def run_tap(
    tmp_path: Path,
    config: dict[str, Any],
    state: Any = None,
    args: tuple[str, ...] = (),
    timeout: float = 120,
) -> TapRun:
    config_path = tmp_path / f"tap-config-{os.getpid()}-{len(list(tmp_path.iterdir()))}.json"
    config_path.write_text(json.dumps(config))
    command = [str(TAP_BIN), "--config", str(config_path), *args]
    if state is not None:
        state_path = config_path.with_suffix(".state.json")
        state_path.write_text(json.dumps(state))
        command += ["--state", str(state_path)]
    result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    if "--discover" in args:  # one pretty-printed catalog
        messages = [json.loads(result.stdout)] if result.returncode == 0 else []
    else:
        lines = result.stdout.decode().splitlines()
        messages = [json.loads(line) for line in lines if line.startswith("{")]
    return TapRun(result.returncode, messages, result.stderr.decode())


def in_process_reader(
    redis_url: str,
    keys: list[str],
    out: io.BytesIO,
    *,
    lock_ttl_ms: int | None = None,
    state: Any = None,
    stop_requested: Callable[[], bool] = lambda: False,
    decode_workers: int = 0,
    **settings: Any,
) -> Reader:
    """A Reader as `sync_all` builds it (fields format), writing to `out`."""
    decoder = FieldsDecoder("table", None)
    writer = MessageWriter([], out=out)
    pool = None
    if decode_workers:
        pool = DecodePool(decode_workers, decoder, writer.deselected)
        pool.start()
    client = StreamClient(redis_url, mode="standalone")
    client.connect()
    metrics = TapMetrics()
    defaults = ReaderSettings(
        stream_keys=keys, read_count=100, start_from="earliest", on_parse_error="stop",
        failed_stream="unused", record_limit=None, shard_index=0, shard_count=1,
        follow=False, heartbeat_seconds=1.0, trim_acknowledged=False,
    )  # fmt: skip
    return Reader(
        dataclasses.replace(defaults, **settings),
        client,
        decoder,
        writer,
        bookmarks=bookmarks_from_state(state),
        stop_requested=stop_requested,
        locks=None if lock_ttl_ms is None else ShardLocks(client, lock_ttl_ms, metrics),
        metrics=metrics,
        pool=pool,
    )
