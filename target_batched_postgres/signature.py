"""Column signatures: which batch a record belongs to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from target_batched_postgres.control import CONTROL_PROPERTIES


@dataclass(frozen=True, slots=True)
class ColumnSignature:
    """Table plus the sorted column names of a record (control properties excluded).

    Records with the same signature can share one multi-row statement; the
    columns a record does not carry keep their database defaults.
    """

    table: str
    columns: tuple[str, ...]

    @classmethod
    def of(cls, table: str, record: Mapping[str, Any]) -> ColumnSignature:
        return cls(table, data_columns(record))


def data_columns(keys: Iterable[str]) -> tuple[str, ...]:
    """Sorted column names of a record: its keys minus the control properties."""
    return tuple(sorted(key for key in keys if key not in CONTROL_PROPERTIES))
