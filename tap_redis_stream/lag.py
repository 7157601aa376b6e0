"""Lag per stream key: how many entries of the key lie after this worker's bookmark.

Computed from `XINFO STREAM` (Redis 7+: `length`, `first-entry`,
`last-generated-id`, `entries-added`, `max-deleted-entry-id`) and the bookmark:

1. empty stream, or bookmark >= `last-generated-id`: 0.
2. bookmark before the first entry: `length` (every entry is unread).
3. otherwise, once the key's *ordinal* is known — entries ever added with an
   ID <= the bookmark — lag = `entries-added` - ordinal. This is Redis's own
   consumer-group lag arithmetic: exact while no entry after the point where
   the ordinal was fixed has been deleted (`max-deleted-entry-id` at or below
   it). The ordinal is fixed whenever the lag is known exactly (cases 1, 2, 4
   with no deletion after the bookmark) and grows by one for every entry the
   worker reads.
4. else the entries are counted with XRANGE, from both ends at once so the
   cost is twice the smaller side: entries after the bookmark, or `length`
   minus entries at or before it (streams trimmed behind the reader count
   fast). Counting stops at `COUNT_LIMIT` per side; a lag above that with no
   known ordinal is reported as `COUNT_LIMIT` (a lower bound) until case 1-3
   applies again, at most once per `RECOUNT_SECONDS` per key.

`lag_seconds` is the time between the bookmark and the newest entry, from
the millisecond part of the IDs (0 when caught up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tap_redis_stream.entry_id import ZERO, EntryId

COUNT_LIMIT = 10_000
RECOUNT_SECONDS = 30.0

# count(key, start, end, limit) -> entries in [start, end], XRANGE syntax
Counter = Callable[[str, str, str, int], int]


@dataclass
class Lag:
    entries: int
    seconds: float
    exact: bool


@dataclass
class _Ordinal:
    at: EntryId  # bookmark when it was fixed
    value: int  # entries ever added with ID <= `current`
    current: EntryId  # the bookmark `value` belongs to


def _id(value: Any) -> EntryId:
    return EntryId.parse(value if isinstance(value, str | bytes) else str(value))


class LagTracker:
    """Per-key lag of one worker; `advanced` must see every entry the worker reads."""

    def __init__(self, count: Counter, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count
        self.clock = clock
        self._ordinals: dict[str, _Ordinal] = {}
        self._estimates: dict[str, tuple[float, Lag]] = {}

    def advanced(self, key: str, entries: int, bookmark: EntryId) -> None:
        """The worker read `entries` more entries of `key`, up to `bookmark`."""
        if key in self._ordinals:
            self._ordinals[key].value += entries
            self._ordinals[key].current = bookmark

    def lag(self, key: str, bookmark: EntryId, info: Mapping[str, Any]) -> Lag:
        length = int(info.get("length", 0))
        last = _id(info.get("last-generated-id") or "0-0")
        added = int(info.get("entries-added", length))
        deleted = _id(info.get("max-deleted-entry-id") or "0-0")
        first = info.get("first-entry")
        seconds = max(0.0, (last.ms - bookmark.ms) / 1000) if bookmark < last else 0.0
        if length == 0 or bookmark >= last:
            if bookmark >= last:
                self._ordinals[key] = _Ordinal(bookmark, added, bookmark)
            return Lag(0, 0.0, True)
        if first and bookmark < _id(first[0]):
            self._fix(key, bookmark, added - length, deleted)
            return Lag(length, seconds, True)
        ordinal = self._ordinals.get(key)
        if (
            ordinal is not None
            and ordinal.current == bookmark  # else it moved without being read: unknown
            and deleted <= ordinal.at
            and added >= ordinal.value
        ):
            return Lag(added - ordinal.value, seconds, True)
        self._ordinals.pop(key, None)
        lag = self._counted(key, bookmark, length, seconds)
        if lag.exact:
            self._fix(key, bookmark, added - lag.entries, deleted)
        return lag

    def _fix(self, key: str, bookmark: EntryId, value: int, deleted: EntryId) -> None:
        if deleted <= bookmark:  # nothing after the bookmark was ever deleted
            self._ordinals[key] = _Ordinal(bookmark, value, bookmark)

    def _counted(self, key: str, bookmark: EntryId, length: int, secs: float) -> Lag:
        now = self.clock()
        cached = self._estimates.get(key)
        if cached is not None and now - cached[0] < RECOUNT_SECONDS:
            return Lag(cached[1].entries, secs, False)
        after_start = "(" + str(bookmark)
        up_to = str(bookmark) if bookmark != ZERO else "0-0"
        limit = 0
        while True:
            limit = min(COUNT_LIMIT, max(limit * 4, 500))
            before = self.count(key, "-", up_to, limit)
            if before < limit:
                lag = Lag(max(0, length - before), secs, True)
                break
            after = self.count(key, after_start, "+", limit)
            if after < limit:
                lag = Lag(after, secs, True)
                break
            if limit >= COUNT_LIMIT:
                lag = Lag(COUNT_LIMIT, secs, False)
                break
        if lag.exact:
            self._estimates.pop(key, None)
        else:
            self._estimates[key] = (now, lag)
        return lag
