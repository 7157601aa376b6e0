"""The sync loop: read every owned key in entry-ID order, emit records, checkpoint each batch.

Every Redis call goes through `Reconnect`, so a Redis restart mid-run is
ridden out with backoff; with shard locks on, a round reads only the keys
whose lock this worker holds. The STATE holds bookmarks of the keys this
worker owns only, so the states of N workers never overlap and can be merged
when the worker count changes (README, "Scaling out").
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from tap_redis_stream.client import StreamClient, owns
from tap_redis_stream.decode_pool import (
    Batch,
    Decoded,
    DecodePool,
    Entries,
    decode_entry,
    entry_at,
)
from tap_redis_stream.entries import (
    ENTRY_FAILURES,
    EntryDecoder,
    EntryParseError,
    as_parse_error,
)
from tap_redis_stream.entry_id import ZERO, EntryId
from tap_redis_stream.faults import fault_point
from tap_redis_stream.lag import LagTracker
from tap_redis_stream.locks import ShardLocks
from tap_redis_stream.messages import MessageWriter
from tap_redis_stream.metrics_server import LAG_REFRESH_SECONDS, TapMetrics
from tap_redis_stream.reconnect import Reconnect, StopWhileUnavailable

logger = logging.getLogger(__name__)
STATE_KEY = "stream_ids"  # state value: {"stream_ids": {"<stream key>": "<ms>-<seq>"}}
RESOLVE_EVERY_SECONDS = 30.0
DEFAULT_RECONNECT_TIMEOUT_SECONDS = 300.0
T = TypeVar("T")


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
        locks: ShardLocks | None = None,
        metrics: TapMetrics | None = None,
        lag: LagTracker | None = None,
        reconnect_timeout_seconds: float = DEFAULT_RECONNECT_TIMEOUT_SECONDS,
        pool: DecodePool | None = None,
    ) -> None:
        self.s = settings
        self.client = client
        self.decoder = decoder
        self.writer = writer
        self.bookmarks = dict(bookmarks)
        self.stop_requested = stop_requested
        self.locks = locks
        self.metrics = metrics or TapMetrics(heartbeat_seconds=settings.heartbeat_seconds)
        self.lag = lag
        self.reconnect = Reconnect(
            client.display_url,
            reconnect_timeout_seconds,
            on_wait=self._waiting_for_redis,
            on_recovered=self.metrics.reconnected,
            stop_requested=stop_requested,
        )
        self.entries_seen = 0
        self._state_at = 0.0
        # With decode workers: the batch being read, and the (started) pool it
        # goes to; run closes it as it ends.
        self.pool = pool
        self._outgoing: Batch = []
        self._pool_broken = False
        self._lag_at = float("-inf")
        foreign = sorted(k for k in self.bookmarks if not self.mine(k))
        if foreign:
            logger.info(
                "The input state has bookmarks of %d key(s) that other workers own "
                "(shard_index %d of shard_count %d); this worker's STATE leaves them out: %s",
                len(foreign),
                settings.shard_index,
                settings.shard_count,
                ", ".join(foreign[:10]),
            )

    def mine(self, key: str) -> bool:
        return owns(key, self.s.shard_index, self.s.shard_count)

    def state(self) -> dict[str, Any]:
        """Bookmarks of the keys this worker owns (never another worker's)."""
        mine = {key: str(eid) for key, eid in sorted(self.bookmarks.items()) if self.mine(key)}
        return {STATE_KEY: mine}

    def emit_state(self) -> None:
        self.writer.state(self.state())
        self.metrics.state_messages.inc()
        self._state_at = time.monotonic()

    def redis(self, what: str, fn: Callable[[], T]) -> T:
        return self.reconnect.call(what, fn)

    def _waiting_for_redis(self, attempt: int) -> None:
        self.metrics.reconnecting(attempt)
        if time.monotonic() - self._state_at >= self.s.heartbeat_seconds:
            self.emit_state()  # the target keeps flushing by age while Redis is away

    def owned_keys(self) -> list[str]:
        keys = self.client.resolve(self.s.stream_keys)
        return [k for k in keys if self.mine(k)]

    def run(self) -> None:
        self.metrics.started()
        try:
            keys = self.redis("list the stream keys", self.owned_keys)
            logger.info("Reading %d stream key(s): %s", len(keys), ", ".join(keys[:20]))
            self.metrics.keys(keys)
            if self.s.trim_acknowledged:
                self.trim(keys)
            cursors = {key: self.start_cursor(key) for key in keys}
            self.emit_state()
            if self.s.follow:
                self.follow(cursors)
            else:
                self.bounded(cursors)
            self.drain()
            self.refresh_lag(list(cursors), force=True)
        except StopWhileUnavailable:
            logger.warning(
                "Stopped while Redis at %s was unavailable: the final STATE covers what was read",
                self.client.display_url,
            )
            # The batches decoding need Redis only to move a failed entry; if
            # that fails too, the bookmarks stop before it (see apply).
            with contextlib.suppress(StopWhileUnavailable):
                self.drain()
        finally:
            if self.pool is not None:
                self.pool.close()
            if self.locks is not None:
                self.locks.release_all()
            self.metrics.stopped()

    def start_cursor(self, key: str) -> EntryId:
        if key in self.bookmarks:
            return self.bookmarks[key]
        if self.s.start_from == "latest":
            self.bookmarks[key] = self._last_id(key) or ZERO
            return self.bookmarks[key]
        return ZERO

    def trim(self, keys: list[str]) -> None:
        """Delete what the incoming state proves durable: entries <= each bookmark."""
        for key in keys:
            bookmark = self.bookmarks.get(key)
            if bookmark is not None and bookmark != ZERO:
                removed = self.redis(f"trim {key!r}", self._trimmer(key, bookmark))
                logger.info("Trimmed %d entries of %r at or below %s", removed, key, bookmark)

    def _trimmer(self, key: str, bookmark: EntryId) -> Callable[[], int]:
        return lambda: self.client.trim_through(key, bookmark)

    def _last_id(self, key: str) -> EntryId | None:
        return self.redis(f"find the last entry of {key!r}", lambda: self.client.last_id(key))

    def readable(self, cursors: dict[str, EntryId]) -> dict[str, EntryId]:
        """The cursors of the keys this worker may read this round (shard locks)."""
        locks = self.locks
        if locks is None:
            return cursors
        held = set(self.redis("take the shard locks", lambda: locks.hold(list(cursors))))
        return {key: cursor for key, cursor in cursors.items() if key in held}

    def read(self, cursors: dict[str, EntryId], block_ms: int | None = None) -> list[Any]:
        started = time.monotonic()
        batch = self.redis(
            "read entries", lambda: self.client.read(cursors, self.s.read_count, block_ms)
        )
        self.metrics.read(sum(len(entries) for _, entries in batch), time.monotonic() - started)
        return batch

    def still_locked(self, batch: list[Any]) -> list[Any]:
        """The part of a read batch whose keys' locks are still ours (see ShardLocks.confirm)."""
        locks = self.locks
        if locks is None or not batch:
            return batch
        keys = [key for key, _ in batch]
        kept = set(self.redis("check the shard locks", lambda: locks.confirm(keys)))
        return batch if len(kept) == len(keys) else [b for b in batch if b[0] in kept]

    def bounded(self, cursors: dict[str, EntryId]) -> None:
        """Read each key up to the last entry it had at start, then return."""
        ends = {key: self._last_id(key) for key in cursors}
        active = {k: c for k, c in cursors.items() if (end := ends[k]) is not None and c < end}
        while active and not self.stop_requested() and not self.limit_reached():
            self.metrics.tick()
            ready = self.readable(active)
            if not ready:
                logger.warning(
                    "Leaving %d stream key(s) for the next run, their locks held elsewhere: %s",
                    len(active),
                    ", ".join(sorted(active)[:20]),
                )
                break
            batch = self.read(ready)
            # A key whose lock was lost during the read counts as returned:
            # it stays active, to be read again once its lock is ours.
            returned = {key for key, _ in batch}
            for key, entries in self.still_locked(batch):
                if self.take(key, entries, active, ends[key]):
                    active.pop(key, None)
            for key in ready.keys() - returned:
                active.pop(key, None)  # nothing after its cursor any more
            self.end_round()
            fault_point("between_reads")
            self.refresh_lag(list(cursors))

    def take(
        self, key: str, entries: Entries, cursors: dict[str, EntryId], end: EntryId | None = None
    ) -> bool:
        """Process one key's entries in order, up to `end`; True when the key is done."""
        records_before = self.writer.records_written
        done = False
        # IDs ascend within a key: where `end` and the record limit cut the
        # batch is known before the first entry.
        if end is not None and entries and entries[-1][0] >= end:
            done = True
            if entries[-1][0] > end:
                entries = [entry for entry in entries if entry[0] <= end]
        limit = self.s.record_limit
        if limit is not None and len(entries) > (room := max(limit - self.entries_seen, 0)):
            entries = entries[:room]
            done = True
        if self.pool is not None:
            if entries:  # decoded by a worker; applied in end_round or later
                self._outgoing.append((key, entries))
                cursors[key] = entries[-1][0]
                self.entries_seen += len(entries)
            return done
        process = self.process
        taken = 0
        for entry_id, fields in entries:
            process(key, entry_id, fields)
            taken += 1
            cursors[key] = entry_id
        self.metrics.key_done(key, taken, self.writer.records_written - records_before)
        if self.lag is not None and taken:
            self.lag.advanced(key, taken, cursors[key])
        return done

    def follow(self, cursors: dict[str, EntryId]) -> None:
        """Block for new entries until asked to stop; STATE after each batch and when idle."""
        block_ms = max(int(self.s.heartbeat_seconds * 1000), 1)
        resolved_at = time.monotonic()
        while not self.stop_requested() and not self.limit_reached():
            self.metrics.tick()
            if time.monotonic() - resolved_at >= RESOLVE_EVERY_SECONDS:
                keys = self.redis("list the stream keys", self.owned_keys)
                for key in keys:
                    if key not in cursors:
                        # Created after the start (SCAN returns every key that
                        # existed throughout): all its entries are new, also
                        # for `start_from: latest`.
                        cursors[key] = self.bookmarks.get(key, ZERO)
                self.metrics.keys(cursors)
                resolved_at = time.monotonic()
            ready = self.readable(cursors)
            if not ready:
                time.sleep(min(self.s.heartbeat_seconds, 1.0))
            else:
                # Batches decoding are not waited for behind a blocking read:
                # a read that finds nothing new lets end_round finish them.
                block = None if self.pool is not None and self.pool.in_flight else block_ms
                for key, entries in self.still_locked(self.read(ready, block_ms=block)):
                    self.take(key, entries, cursors)
            self.end_round()  # after a batch, or as the idle heartbeat
            fault_point("between_reads")
            self.refresh_lag(list(cursors))

    def refresh_lag(self, keys: list[str], *, force: bool = False) -> None:
        """Lag gauges per key (only with the metrics endpoint on): see lag.py."""
        tracker = self.lag
        now = time.monotonic()
        if tracker is None or (not force and now - self._lag_at < LAG_REFRESH_SECONDS):
            return
        self._lag_at = now
        infos = self.redis("read XINFO STREAM", lambda: self.client.stream_info(keys))
        for key in keys:
            info = infos.get(key)
            if info is None:
                self.metrics.set_lag(key, 0, 0.0)
                continue
            bookmark = self.bookmarks.get(key, ZERO)
            count = partial(tracker.lag, key, bookmark, info)
            lag = self.redis(f"count the entries of {key!r}", count)
            self.metrics.set_lag(key, lag.entries, lag.seconds)

    def limit_reached(self) -> bool:
        return self.s.record_limit is not None and self.entries_seen >= self.s.record_limit

    def process(self, key: str, entry_id: EntryId, fields: dict[bytes, bytes]) -> None:
        try:
            operation = decode_entry(self.decoder, key, fields)
            self.writer.record(operation, key, str(entry_id))
        except ENTRY_FAILURES as failure:
            self.failed(key, entry_id, fields, as_parse_error(failure))
        self.bookmarks[key] = entry_id
        self.entries_seen += 1

    def failed(
        self, key: str, entry_id: EntryId, fields: dict[bytes, bytes], exc: EntryParseError
    ) -> None:
        """An entry that cannot be decoded: moved to the failed stream, or the run stops.

        Everything before it is written and bookmarked.
        """
        reason = f"stream {key!r}, entry {entry_id}: {exc}"
        if self.s.on_parse_error != "dead_letter":
            # Everything before this entry is out; its bookmark stays before it.
            self.emit_state()
            raise ParseFailure(f"tap-redis-stream: cannot decode {reason}") from exc
        error = str(exc)
        self.redis(
            f"move entry {entry_id} of {key!r} to {self.s.failed_stream!r}",
            lambda: self.client.dead_letter(self.s.failed_stream, key, entry_id, error, fields),
        )
        self.metrics.dead_letter(key)
        logger.warning("Moved to %r: %s", self.s.failed_stream, reason)

    # -- with decode workers (see decode_pool) -----------------------------------

    def end_round(self) -> None:
        """After a read round: STATE, or with workers, the round's batch sent off.

        A worker's result is applied (and a STATE written) once all workers
        are busy, and all of them when a round read nothing."""
        pool = self.pool
        if pool is None:
            self.emit_state()
            return
        if self._outgoing:
            if pool.in_flight >= pool.workers:
                self.apply(*pool.result())
            batch, self._outgoing = self._outgoing, []
            pool.submit(batch)
        elif pool.in_flight:
            self.drain()
        else:
            self.emit_state()  # nothing read, nothing decoding: the heartbeat

    def drain(self) -> None:
        """Apply the results of every batch in flight, in order."""
        pool = self.pool
        if pool is None or self._pool_broken:
            return
        for batch, decoded in pool.results():
            self.apply(batch, decoded)

    def apply(self, batch: Batch, decoded: Decoded) -> None:
        """Write a worker's lines for a batch, with the SCHEMA and failed entries
        between them where it marked them, bookmark the batch and write a STATE."""
        self._pool_broken = True  # until the batch is applied whole: no later one may be
        writer = self.writer
        lines = memoryview(decoded.lines)
        at = 0
        for index, offset, table, what, kinds in decoded.events:
            writer.lines(lines[at:offset])
            at = offset
            if table is not None:
                writer.take_in(table, what, kinds)
                continue
            number, position = entry_at(batch, index)
            for key, entries in batch[:number]:
                self.bookmarks[key] = entries[-1][0]
            key, entries = batch[number]
            if position:
                self.bookmarks[key] = entries[position - 1][0]
            entry_id, fields = entries[position]
            self.failed(key, entry_id, fields, EntryParseError(what))
        writer.lines(lines[at:])
        for (key, entries), written in zip(batch, decoded.records, strict=True):
            self.bookmarks[key] = entries[-1][0]
            writer.records_written += written
            self.metrics.key_done(key, len(entries), written)
            if self.lag is not None:
                self.lag.advanced(key, len(entries), entries[-1][0])
        self._pool_broken = False
        self.emit_state()
