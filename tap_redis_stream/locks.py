"""The old drainer's shard lock, so this tap and the drainer never read one shard at once.

The drainer claims a shard with `SET <stream-key>_lock LOCKED NX PX 120000`.
With `shard_locks: true` the tap takes the same lock (its own token as the
value) before it reads a key, refreshes it while it works, skips a key whose
lock someone else holds (retrying at most every second), and releases what it
holds on exit. Refresh and release are Lua scripts that act only while the
value is still this worker's token, so an expired lock that another process
took since is never extended or deleted.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from tap_redis_stream.client import StreamClient

logger = logging.getLogger(__name__)

LOCK_SUFFIX = "_lock"
RETRY_SKIPPED_SECONDS = 1.0

REFRESH_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def lock_key(stream_key: str) -> str:
    """`<stream-key>_lock`: same hash tag as the key, so the same cluster slot."""
    return stream_key + LOCK_SUFFIX


def owner_token() -> str:
    """A lock value unique to this process (the drainer writes `LOCKED`)."""
    return f"tap-redis-stream:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class LockEvents(Protocol):
    def lock_skipped(self, key: str, holder: str) -> None: ...

    def lock_lost(self, key: str) -> None: ...

    def locks_held(self, count: int) -> None: ...


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class ShardLocks:
    """This worker's shard locks: which keys it may read this round."""

    def __init__(
        self,
        client: StreamClient,
        ttl_ms: int,
        events: LockEvents,
        *,
        token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl_ms = ttl_ms
        self.token = token or owner_token()
        self.events = events
        self.clock = clock
        self.refresh_after = ttl_ms / 1000 / 3
        self.held: dict[str, float] = {}  # key -> when it was taken or last refreshed
        self._tried: dict[str, float] = {}  # key -> last failed attempt
        self._holders: dict[str, str] = {}  # key -> who held it when we last looked
        self._refresh: Any = None
        self._release: Any = None

    def hold(self, keys: Iterable[str]) -> list[str]:
        """The keys this worker holds now: takes free locks, refreshes its own when
        due, and skips keys locked by someone else."""
        ready: list[str] = []
        for key in keys:
            now = self.clock()
            if key in self.held:
                if now - self.held[key] < self.refresh_after or self._refresh_one(key, now):
                    ready.append(key)
            elif now - self._tried.get(
                key, float("-inf")
            ) >= RETRY_SKIPPED_SECONDS and self._acquire(key, now):
                ready.append(key)
        self.events.locks_held(len(self.held))
        return ready

    def confirm(self, keys: Iterable[str]) -> list[str]:
        """Of the keys a read just returned entries for, those whose lock is still ours.

        A read can take long: blocked in follow mode, or retried while Redis
        was unreachable. Past `refresh_after` since the lock was last set, it
        may have expired and been taken by the drainer meanwhile, so it is
        refreshed now: the refresh succeeds only while the value is still this
        worker's token, which no other process can have set, so the lock was
        ours all along. A key that fails is dropped from this round (its
        entries are read again once the lock is ours again).
        """
        confirmed: list[str] = []
        for key in keys:
            taken = self.held.get(key)
            if taken is None:
                continue
            now = self.clock()
            if now - taken < self.refresh_after or self._refresh_one(key, now):
                confirmed.append(key)
        self.events.locks_held(len(self.held))
        return confirmed

    def _acquire(self, key: str, now: float) -> bool:
        name = lock_key(key)
        if self.client.call("set", name, self.token, nx=True, px=self.ttl_ms):
            return self._took(key, now)
        holder = self.client.call("get", name)
        if holder is not None and _text(holder) == self.token:
            # Ours already (Redis kept it across a restart): extend it.
            return self._refresh_one(key, now, quiet=True) and self._took(key, now)
        self._tried[key] = now
        who = "(expired just now)" if holder is None else repr(_text(holder))
        if self._holders.get(key) != who:
            logger.warning(
                "Skipping stream %r this round: its lock %r is held by %s (shard_locks)",
                key,
                name,
                who,
            )
            self._holders[key] = who
        self.events.lock_skipped(key, "" if holder is None else _text(holder))
        return False

    def _took(self, key: str, now: float) -> bool:
        if key in self._holders:
            logger.info("Took the lock of stream %r after skipping it", key)
        self.held[key] = now
        self._tried.pop(key, None)
        self._holders.pop(key, None)
        return True

    def _refresh_one(self, key: str, now: float, *, quiet: bool = False) -> bool:
        if self._refresh is None:
            self._refresh = self.client.script(REFRESH_SCRIPT)
        if self._refresh([lock_key(key)], [self.token, self.ttl_ms]):
            self.held[key] = now
            return True
        if not quiet:
            logger.warning(
                "Lost the lock of stream %r (%r expired or was taken): not reading it until "
                "the lock is ours again",
                key,
                lock_key(key),
            )
            self.events.lock_lost(key)
        self.held.pop(key, None)
        self._tried[key] = now
        return False

    def release_all(self) -> None:
        """Delete every lock still ours (compare-and-delete); Redis errors only warn:
        a lock left behind expires after its TTL."""
        if not self.held:
            return
        keys = sorted(self.held)
        try:
            if self._release is None:
                self._release = self.client.script(RELEASE_SCRIPT)
            released = sum(int(self._release([lock_key(k)], [self.token])) for k in keys)
        except Exception as exc:  # exit path: a lock left behind expires by its TTL
            logger.warning(
                "Could not release %d shard lock(s) (%s): they expire in %d ms",
                len(keys),
                exc,
                self.ttl_ms,
            )
        else:
            logger.info("Released %d of %d shard lock(s)", released, len(keys))
        self.held.clear()
        self.events.locks_held(0)
