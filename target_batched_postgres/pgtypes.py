"""Column types: from JSON Schema for new columns, and what an existing column accepts."""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Kind(Enum):
    """How a Python value is rendered as text for a column of this kind."""

    SCALAR = "scalar"
    JSON = "json"
    ARRAY = "array"


@dataclass(frozen=True, slots=True)
class ColumnType:
    """A column's type: schema-qualified type name (quoted when used) and its kind."""

    schema: str
    name: str
    kind: Kind

    @classmethod
    def from_catalog(cls, schema: str, name: str, category: str) -> ColumnType:
        """Build from pg_type (`typnamespace`, `typname`, `typcategory`)."""
        if category == "A":
            kind = Kind.ARRAY
        elif name in {"json", "jsonb"}:
            kind = Kind.JSON
        else:
            kind = Kind.SCALAR
        return cls(schema, name, kind)


def _pg(name: str, kind: Kind = Kind.SCALAR) -> ColumnType:
    return ColumnType("pg_catalog", name, kind)


JSONB = _pg("jsonb", Kind.JSON)
TEXT = _pg("text")
BIGINT = _pg("int8")
NUMERIC = _pg("numeric")
BOOLEAN = _pg("bool")
TIMESTAMPTZ = _pg("timestamptz")
DATE = _pg("date")
TIME = _pg("time")
UUID = _pg("uuid")

_FORMATS = {"date-time": TIMESTAMPTZ, "date": DATE, "time": TIME, "uuid": UUID}
_TYPES = {"integer": BIGINT, "number": NUMERIC, "boolean": BOOLEAN, "object": JSONB, "array": JSONB}


def _non_null_types(prop: dict[str, Any]) -> list[str]:
    declared = prop.get("type")
    if isinstance(declared, str):
        return [declared] if declared != "null" else []
    if isinstance(declared, list):
        return [t for t in declared if t != "null"]
    for key in ("anyOf", "oneOf"):
        if isinstance(prop.get(key), list):
            for option in prop[key]:
                found = _non_null_types(option) if isinstance(option, dict) else []
                if found:
                    return found
    return []


def type_for_schema(prop: dict[str, Any]) -> ColumnType:
    """Column type for a new column from its JSON Schema property.

    objects/arrays -> jsonb, date-time -> timestamptz, integer -> bigint,
    number -> numeric, boolean -> boolean, string -> text (or the format's
    type); several types or none at all -> jsonb, which holds any JSON value.
    """
    types = _non_null_types(prop)
    if len(types) != 1:
        if set(types) == {"integer", "number"}:
            return NUMERIC
        return JSONB
    (kind,) = types
    if kind == "string":
        return _FORMATS.get(str(prop.get("format", "")), TEXT)
    return _TYPES.get(kind, JSONB)


def type_for_value(value: Any) -> ColumnType:
    """Column type for a column the schema does not declare, from a sample value."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return BIGINT
    if isinstance(value, float | decimal.Decimal):
        return NUMERIC
    if isinstance(value, dt.datetime):
        return TIMESTAMPTZ
    if isinstance(value, dt.date):
        return DATE
    if isinstance(value, str):
        return TEXT
    return JSONB
