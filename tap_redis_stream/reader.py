"""The sync loop: read every owned key in entry-ID order, emit records, checkpoint each batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tap_redis_stream.client import StreamClient, owns
from tap_redis_stream.entries import EntryDecoder, EntryParseError
from tap_redis_stream.entry_id import ZERO, EntryId
from tap_redis_stream.faults import fault_point
from tap_redis_stream.messages import MessageWriter

logger = logging.getLogger(__name__)
STATE_KEY = "stream_ids"  # state value: {"stream_ids": {"<stream key>": "<ms>-<seq>"}}
RESOLVE_EVERY_SECONDS = 30.0


class ParseFailure(SystemExit):
    """An undecodable entry with `on_parse_error: stop`: exit non-zero, state before it."""


def bookmarks_from_state(state: Mapping[str, Any] | None) -> dict[str, EntryId]:
    raw = (state or {}).get(STATE_KEY) or {}
    return {str(key): EntryId.parse(str(value)) for key, value in raw.items()}


@dataclass
class ReaderSettings:
    stream_keys: list[str]
    read_count: int
    start_from: str
    on_parse_error: str
    failed_stream: str
    record_limit: int | None
    shard_index: int
    shard_count: int
    follow: bool
    heartbeat_seconds: float
    trim_acknowledged: bool


class Reader:
    """Reads the keys this worker owns and writes Singer messages for their entries."""

    def __init__(
        self,
        settings: ReaderSettings,
        client: StreamClient,
        decoder: EntryDecoder,
        writer: MessageWriter,
        *,
        bookmarks: dict[str, EntryId],
        stop_requested: Callable[[], bool],
    ) -> None:
        self.s = settings
        self.client = client
        self.decoder = decoder
        self.writer = writer
        self.bookmarks = dict(bookmarks)
        self.stop_requested = stop_requested
        self.entries_seen = 0

    def state(self) -> dict[str, Any]:
        return {STATE_KEY: {key: str(eid) for key, eid in sorted(self.bookmarks.items())}}

    def owned_keys(self) -> list[str]:
        keys = self.client.resolve(self.s.stream_keys)
        return [k for k in keys if owns(k, self.s.shard_index, self.s.shard_count)]

    def run(self) -> None:
        keys = self.owned_keys()
        logger.info("Reading %d stream key(s): %s", len(keys), ", ".join(keys[:20]))
        if self.s.trim_acknowledged:
            self.trim(keys)
        cursors = {key: self.start_cursor(key) for key in keys}
        self.writer.state(self.state())
        if self.s.follow:
            self.follow(cursors)
        else:
            self.bounded(cursors)

    def start_cursor(self, key: str) -> EntryId:
        if key in self.bookmarks:
            return self.bookmarks[key]
        if self.s.start_from == "latest":
            self.bookmarks[key] = self.client.last_id(key) or ZERO
            return self.bookmarks[key]
        return ZERO

    def trim(self, keys: list[str]) -> None:
        """Delete what the incoming state proves durable: entries <= each bookmark."""
        for key in keys:
            bookmark = self.bookmarks.get(key)
            if bookmark is not None and bookmark != ZERO:
                removed = self.client.trim_through(key, bookmark)
                logger.info("Trimmed %d entries of %r at or below %s", removed, key, bookmark)

    def bounded(self, cursors: dict[str, EntryId]) -> None:
        """Read each key up to the last entry it had at start, then return."""
        ends = {key: self.client.last_id(key) for key in cursors}
        active = {k: c for k, c in cursors.items() if ends[k] is not None and c < ends[k]}  # type: ignore[operator]
        while active and not self.stop_requested() and not self.limit_reached():
            batch = self.client.read(active, self.s.read_count)
            if not batch:
                break
            for key, entries in batch:
                end = ends[key]
                for entry_id, fields in entries:
                    if end is None or entry_id > end or self.limit_reached():
                        active.pop(key, None)
                        break
                    self.process(key, entry_id, fields)
                    active[key] = entry_id
                    if entry_id >= end:
                        active.pop(key, None)
                        break
            self.writer.state(self.state())
            fault_point("between_reads")

    def follow(self, cursors: dict[str, EntryId]) -> None:
        """Block for new entries until asked to stop; STATE after each batch and when idle."""
        block_ms = max(int(self.s.heartbeat_seconds * 1000), 1)
        resolved_at = time.monotonic()
        while not self.stop_requested() and not self.limit_reached():
            if time.monotonic() - resolved_at >= RESOLVE_EVERY_SECONDS:
                for key in self.owned_keys():
                    cursors.setdefault(key, self.start_cursor(key))
                resolved_at = time.monotonic()
            if not cursors:
                time.sleep(min(self.s.heartbeat_seconds, 1.0))
                self.writer.state(self.state())
                continue
            batch = self.client.read(cursors, self.s.read_count, block_ms=block_ms)
            for key, entries in batch:
                for entry_id, fields in entries:
                    if self.limit_reached():
                        break
                    self.process(key, entry_id, fields)
                    cursors[key] = entry_id
            self.writer.state(self.state())  # after a batch, or as the idle heartbeat
            fault_point("between_reads")

    def limit_reached(self) -> bool:
        return self.s.record_limit is not None and self.entries_seen >= self.s.record_limit

    def process(self, key: str, entry_id: EntryId, fields: dict[bytes, bytes]) -> None:
        try:
            operation = self.decoder.decode(key, fields)
        except EntryParseError as exc:
            reason = f"stream {key!r}, entry {entry_id}: {exc}"
            if self.s.on_parse_error != "dead_letter":
                # Everything before this entry is out; its bookmark stays before it.
                self.writer.state(self.state())
                raise ParseFailure(f"tap-redis-stream: cannot decode {reason}") from exc
            self.client.dead_letter(self.s.failed_stream, key, entry_id, str(exc), fields)
            logger.warning("Moved to %r: %s", self.s.failed_stream, reason)
        else:
            self.writer.record(operation, key, str(entry_id))
        self.bookmarks[key] = entry_id
        self.entries_seen += 1
