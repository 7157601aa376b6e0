"""Entry decoders: one module per `entry_format`, all producing `Operation`s."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

OperationKind = Literal["insert", "update", "delete"]


class EntryParseError(ValueError):
    """An entry that cannot be decoded. The tap adds stream key and entry ID."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One decoded stream entry: what to do to which table.

    `row` maps column names (already mapped / snake_cased) to values ready for
    PostgreSQL to cast: str, int, decimal.Decimal, float, bool, None, list (PostgreSQL array) or
    dict (JSON). `where` is the structured clause of an update/delete (see
    entries.euler_kv for its shape). `model` is, for an update, the full
    updated row the KV layer sent (`updatedModel`, columns mapped): what the
    old drainer published to Kafka for it.
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
