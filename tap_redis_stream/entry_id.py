"""Redis stream entry IDs as (milliseconds, sequence) numbers, never as strings."""

from __future__ import annotations

from typing import NamedTuple

MAX_SEQ = 2**64 - 1


class EntryId(NamedTuple):
    """`<ms>-<seq>`; tuple order is the stream's order (`1-9` < `1-10`)."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str | bytes) -> EntryId:
        raw = text.decode() if isinstance(text, bytes) else text
        ms, _, seq = raw.partition("-")
        try:
            return cls(int(ms), int(seq or 0))
        except ValueError:
            raise ValueError(f"not a stream entry ID: {raw!r}") from None

    def next(self) -> EntryId:
        """The smallest ID greater than this one (none follows MAX_ID)."""
        if self == MAX_ID:
            raise ValueError(f"no stream entry ID follows {self}")
        if self.seq == MAX_SEQ:
            return EntryId(self.ms + 1, 0)
        return EntryId(self.ms, self.seq + 1)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ZERO = EntryId(0, 0)
MAX_ID = EntryId(2**64 - 1, MAX_SEQ)  # the last ID Redis allows: 18446744073709551615-...
