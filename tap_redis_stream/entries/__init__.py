"""Entry decoders: one module per `entry_format`, all producing `Operation`s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

import msgspec

OperationKind = Literal["insert", "update", "delete"]


class EntryParseError(ValueError):
    """An entry that cannot be decoded. The tap adds stream key and entry ID."""


# What decoding an entry and writing its RECORD may raise for a bad entry:
# besides a parse error, nesting deeper than Python's recursion allows (a
# where clause, `updatedModel`, a JSON row: several hundred levels), or text
# that is not valid UTF-8 (a lone surrogate such as Haskell's `\55296`).
# ArithmeticError (decimal.InvalidOperation, OverflowError) is a safety net:
# the decoders turn the numbers they know of into values or parse errors, and
# one they missed should cost one entry, not stop the tap with a traceback.
ENTRY_FAILURES: tuple[type[Exception], ...] = (
    EntryParseError,
    RecursionError,
    UnicodeEncodeError,
    msgspec.EncodeError,
    ArithmeticError,
)


def as_parse_error(exc: Exception) -> EntryParseError:
    """`exc` from decoding or writing an entry, as the parse error it is for the operator."""
    if isinstance(exc, EntryParseError):
        return exc
    if isinstance(exc, RecursionError) or "Recursion limit" in str(exc):
        return EntryParseError(
            "nested too deeply to be written as a Singer message (several hundred levels of JSON)"
        )
    if isinstance(exc, ArithmeticError):
        # decimal's messages name only the signal ("[<class 'decimal.Overflow'>]").
        return EntryParseError(
            f"a number cannot be decoded or written ({type(exc).__name__}: {exc})"
        )
    return EntryParseError(f"cannot be written as a Singer message: {exc}")


class Operation(msgspec.Struct, frozen=True):
    """One decoded stream entry: what to do to which table.

    `row` maps column names (already mapped / snake_cased) to values ready for
    PostgreSQL to cast: str, int, decimal.Decimal, float, bool, None, list (PostgreSQL array) or
    dict (JSON). `where` is the structured clause of an update/delete (see
    entries.euler_kv for its shape). `model` is, for an update, the full
    updated row the KV layer sent (`updatedModel`, columns mapped): what the
    old drainer published to Kafka for it.

    A frozen msgspec Struct rather than a dataclass: one is built per entry,
    and a Struct builds in a tenth of the time.
    """

    table: str
    kind: OperationKind
    row: Mapping[str, Any]
    where: Any = None
    force_drain: bool = False
    model: Mapping[str, Any] | None = None


class EntryDecoder(Protocol):
    """Turns one Redis stream entry (field -> value bytes) into one Operation."""

    def decode(self, stream_key: str, fields: Mapping[bytes, bytes]) -> Operation: ...
