"""The strings inside a decoded JSON value (dict keys included): find them, change them.

Iterative, so nesting of any depth works. Shared by the two kinds of text
PostgreSQL cannot store: NUL bytes (nul_bytes.py) and lone surrogates
(surrogates.py). `found` says whether a string holds what is looked for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from target_batched_postgres import control

Found = Callable[[str], object]
# Control properties that are not written as values: a record's where clause
# and model are (in a change's statement, or on Kafka), the rest steer.
_STEERING = control.CONTROL_PROPERTIES - {control.WHERE, control.MODEL}


def first_string(value: Any, found: Found) -> str | None:
    """The first string inside `value`, in order, for which `found` is true."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if found(item):
                return item
        elif isinstance(item, dict):  # reversed onto the stack: taken in order
            stack.extend(reversed([part for pair in item.items() for part in pair]))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return None


def column_with(record: Mapping[str, Any], found: Found) -> str | None:
    """The first column (or `_sdc_where` / `_sdc_model`) whose name or value holds a
    string for which `found` is true."""
    for key, value in record.items():
        if key in _STEERING:
            continue
        if found(key) or first_string(value, found) is not None:
            return key
    return None


def map_strings(value: Any, found: Found, change: Callable[[str], str]) -> Any:
    """A copy of `value` with `change` applied to each string for which `found` is
    true; `value` itself when there is none. Containers are copied, other values kept."""
    if isinstance(value, str):
        return change(value) if found(value) else value
    if not isinstance(value, dict | list) or first_string(value, found) is None:
        return value
    holder: list[Any] = [None]
    # Values still to copy: (source, the copy's parent, its key or index there).
    pending: list[tuple[Any, Any, Any]] = [(value, holder, 0)]
    while pending:
        source, parent, slot = pending.pop()
        if isinstance(source, str):
            parent[slot] = change(source) if found(source) else source
        elif isinstance(source, dict):
            copy: dict[Any, Any] = {}
            for key, item in source.items():
                new_key = change(key) if isinstance(key, str) and found(key) else key
                copy[new_key] = None
                pending.append((item, copy, new_key))
            parent[slot] = copy
        elif isinstance(source, list):
            items: list[Any] = [None] * len(source)
            pending.extend((item, items, i) for i, item in enumerate(source))
            parent[slot] = items
        else:
            parent[slot] = source
    return holder[0]
