"""Open buckets per column signature inside one table; pure, no I/O."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from target_batched_postgres.signature import ColumnSignature

Clock = Callable[[], float]


@dataclass(slots=True)
class PendingRecord:
    """A record waiting in a bucket, with its arrival sequence number."""

    seq: int
    record: dict[str, Any]


@dataclass(slots=True)
class Bucket:
    """Records of one signature, in arrival order."""

    signature: ColumnSignature
    opened_at: float
    records: list[PendingRecord] = field(default_factory=list)

    @property
    def oldest_seq(self) -> int:
        return self.records[0].seq


class TableBatcher:
    """One open bucket per column signature of a table.

    A new signature opens a new bucket without touching the others, so records
    whose key sets alternate A, B, A, B fill two buckets, not many.
    """

    def __init__(self, table: str, batch_size: int, clock: Clock = time.monotonic) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.table = table
        self.batch_size = batch_size
        self._clock = clock
        self._buckets: dict[tuple[str, ...], Bucket] = {}
        self.signatures_seen: set[tuple[str, ...]] = set()

    def add(self, seq: int, record: dict[str, Any], columns: tuple[str, ...]) -> Bucket | None:
        """Add a record; return its bucket, removed from the open set, once it is full."""
        bucket = self._buckets.get(columns)
        if bucket is None:
            bucket = Bucket(ColumnSignature(self.table, columns), self._clock())
            self._buckets[columns] = bucket
            self.signatures_seen.add(columns)
        bucket.records.append(PendingRecord(seq, record))
        if len(bucket.records) >= self.batch_size:
            return self._buckets.pop(columns)
        return None

    def take_aged(self, max_age_seconds: float) -> list[Bucket]:
        """Remove and return the buckets whose oldest record is older than the limit."""
        now = self._clock()
        aged = [k for k, b in self._buckets.items() if now - b.opened_at >= max_age_seconds]
        return [self._buckets.pop(k) for k in aged]

    def take_all(self) -> list[Bucket]:
        """Remove and return every open bucket, oldest first."""
        buckets = sorted(self._buckets.values(), key=lambda b: b.oldest_seq)
        self._buckets.clear()
        return buckets

    def oldest_open_seq(self) -> int | None:
        """Sequence number of the oldest record still waiting, if any."""
        return min((b.oldest_seq for b in self._buckets.values()), default=None)

    @property
    def pending_count(self) -> int:
        return sum(len(b.records) for b in self._buckets.values())

    def __iter__(self) -> Iterator[Bucket]:
        return iter(list(self._buckets.values()))
