"""Redis stream entry IDs as (milliseconds, sequence) numbers, never as strings."""

from __future__ import annotations

from typing import NamedTuple

MAX_SEQ = 2**64 - 1
_new_tuple = tuple.__new__


class EntryId(NamedTuple):
    """`<ms>-<seq>`; tuple order is the stream's order (`1-9` < `1-10`)."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str | bytes) -> EntryId:
        # Once per entry read: int() takes the bytes as they are, and
        # tuple.__new__ skips the generated __new__'s Python frame.
        ms: str | bytes
        seq: str | bytes
        if isinstance(text, bytes):
            ms, _, seq = text.partition(b"-")
        else:
            ms, _, seq = text.partition("-")
        try:
            return _new_tuple(cls, (int(ms), int(seq or 0)))
        except ValueError:
            raw = text.decode(errors="replace") if isinstance(text, bytes) else text
            raise ValueError(f"not a stream entry ID: {raw!r}") from None

    def next(self) -> EntryId:
        """The smallest ID greater than this one (none follows MAX_ID)."""
        if self == MAX_ID:
            raise ValueError(f"no stream entry ID follows {self}")
        if self.seq == MAX_SEQ:
            return EntryId(self.ms + 1, 0)
        return EntryId(self.ms, self.seq + 1)

    def __str__(self) -> str:
        return "%d-%d" % self  # noqa: UP031 (a third faster than the f-string's two attribute reads)


def parse_reply_id(text: bytes) -> EntryId:
    """EntryId.parse for a server reply's `<ms>-<seq>` bytes, in about half its time.

    Raises ValueError (unworded) for anything else: parse that with EntryId.parse.
    """
    ms, _, seq = text.partition(b"-")
    return _new_tuple(EntryId, (int(ms), int(seq)))


ZERO = EntryId(0, 0)
MAX_ID = EntryId(2**64 - 1, MAX_SEQ)  # the last ID Redis allows: 18446744073709551615-...
