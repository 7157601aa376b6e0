"""Redis I/O for the tap: key resolution, reads, trimming, failed entries.

Only this module talks to redis-py.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from tap_redis_stream.entry_id import EntryId

_GLOB_CHARS = set("*?[")
SCAN_COUNT = 1000
SOCKET_TIMEOUT_SECONDS = 30.0


def is_pattern(key: str) -> bool:
    """A glob pattern (`*`, `?`, `[`); `{shard-1}` hash tags alone are literal names."""
    return any(ch in _GLOB_CHARS for ch in key)


def owns(key: str, shard_index: int, shard_count: int) -> bool:
    """Stable assignment of a key to one of `shard_count` workers."""
    return zlib.crc32(key.encode()) % shard_count == shard_index


Batch = list[tuple[str, list[tuple[EntryId, dict[bytes, bytes]]]]]


class StreamClient:
    """Reads Redis stream keys in entry-ID order."""

    def __init__(self, url: str, *, block_timeout_seconds: float = 0) -> None:
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS + block_timeout_seconds,
            socket_connect_timeout=10,
            health_check_interval=30,
        )

    def ping(self) -> None:
        self._redis.ping()

    def resolve(self, names: Iterable[str]) -> list[str]:
        """Literal keys as given; patterns expanded with SCAN over stream keys. Sorted."""
        keys: set[str] = set()
        for name in names:
            if not is_pattern(name):
                keys.add(name)
                continue
            for key in self._redis.scan_iter(match=name, count=SCAN_COUNT, _type="stream"):
                keys.add(key.decode() if isinstance(key, bytes) else str(key))
        return sorted(keys)

    def last_id(self, key: str) -> EntryId | None:
        """ID of the key's last entry now, or None when it is empty or missing."""
        newest: Any = self._redis.xrevrange(key, count=1)
        return EntryId.parse(newest[0][0]) if newest else None

    def sample(self, key: str, count: int) -> list[tuple[EntryId, dict[bytes, bytes]]]:
        """The key's first `count` entries (for discovery)."""
        entries: Any = self._redis.xrange(key, count=count)
        return [(EntryId.parse(i), dict(f)) for i, f in entries]

    def read(
        self, cursors: Mapping[str, EntryId], count: int, block_ms: int | None = None
    ) -> Batch:
        """Entries after each cursor (XREAD), up to `count` per key, in ID order."""
        if not cursors:
            return []
        streams: dict[Any, Any] = {key: str(cursor) for key, cursor in cursors.items()}
        reply: Any = self._redis.xread(streams, count=count, block=block_ms)
        batch: Batch = []
        for key, entries in reply or []:
            name = key.decode() if isinstance(key, bytes) else str(key)
            batch.append((name, [(EntryId.parse(i), dict(f)) for i, f in entries]))
        return batch

    def trim_through(self, key: str, bookmark: EntryId) -> int:
        """Delete entries with ID <= bookmark (XTRIM MINID removes IDs below its argument)."""
        return int(self._redis.xtrim(key, minid=str(bookmark.next()), approximate=False))

    def dead_letter(
        self,
        failed_stream: str,
        key: str,
        entry_id: EntryId,
        reason: str,
        fields: Mapping[bytes, bytes],
    ) -> None:
        """XADD the raw entry with where it came from and why it failed."""
        payload: dict[Any, Any] = {
            "source_stream": key,
            "source_entry_id": str(entry_id),
            "reason": reason,
        }
        for name, value in fields.items():
            payload[b"field:" + name] = value
        self._redis.xadd(failed_stream, payload)

    def close(self) -> None:
        self._redis.close()


def keys_of(batch: Sequence[tuple[str, Any]]) -> list[str]:
    return [key for key, _ in batch]
