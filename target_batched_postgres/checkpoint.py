"""Which STATE may be emitted: only one whose every earlier record is durable."""

from __future__ import annotations

from typing import Any


class Checkpointer:
    """Holds incoming STATE messages until the records before them are durable.

    Each STATE is tagged with the number of records that arrived before it. A
    record is durable once it is acknowledged by Kafka and committed (or
    dead-lettered) in PostgreSQL, i.e. once it left its bucket by a successful
    flush. Given the sequence number of the oldest record still waiting, every
    STATE that arrived at or before it may be emitted; only the newest is.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[int, Any]] = []
        self._last_emitted: Any = None

    def add(self, records_before: int, state: Any) -> None:
        self._pending.append((records_before, state))

    def take_emittable(self, oldest_waiting_seq: int | None) -> Any | None:
        """Return the newest STATE now safe to emit (None if none or already emitted)."""
        ready: Any = None
        keep = 0
        for index, (records_before, state) in enumerate(self._pending):
            if oldest_waiting_seq is None or records_before <= oldest_waiting_seq:
                ready = state
                keep = index + 1
            else:
                break
        del self._pending[:keep]
        if ready is None or ready == self._last_emitted:
            return None
        self._last_emitted = ready
        return ready

    def mark_emitted(self, state: Any) -> bool:
        """Record a STATE written by other means; False when it repeats the last one."""
        if state == self._last_emitted:
            return False
        self._last_emitted = state
        return True
