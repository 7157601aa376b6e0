"""Table, column and topic names: PostgreSQL's limits held as data."""

from __future__ import annotations

import hashlib
import re

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
_HASH_CHARS = 8
_NOT_TABLE_CHAR = re.compile(r"[^a-z0-9_]")
_NOT_TOPIC_CHAR = re.compile(r"[^A-Za-z0-9._-]")
MAX_TOPIC_CHARS = 249


def fit_identifier(name: str) -> str:
    """Return `name` if it fits in 63 bytes, else a truncated name with a hash suffix.

    A name holding NUL bytes or lone surrogates (not UTF-8) gets them removed
    and the hash suffix too.

    PostgreSQL silently truncates longer identifiers, so two long names sharing
    their first 63 bytes would collide; the hash of the full name keeps them apart.
    """
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no identifier can hold it
        encoded = name.encode("utf-8", "surrogatepass")
    else:
        if len(encoded) <= MAX_IDENTIFIER_BYTES and "\x00" not in name:
            return name
    # Too long, or holding NUL bytes (which no identifier can hold: libpq
    # would cut the name at the first one): the rest plus a hash of the whole.
    digest = hashlib.sha1(encoded, usedforsecurity=False).hexdigest()[:_HASH_CHARS]
    keep = MAX_IDENTIFIER_BYTES - _HASH_CHARS - 1
    kept = name.replace("\x00", "").encode("utf-8", "ignore")[:keep]
    return f"{kept.decode('utf-8', errors='ignore')}_{digest}"


def table_name_for_stream(stream_name: str) -> str:
    """Destination table of a Singer stream: lower case, `[a-z0-9_]` only, <= 63 bytes.

    `test:SpecialChars!in?attributes` -> `test_specialchars_in_attributes`.
    """
    cleaned = _NOT_TABLE_CHAR.sub("_", stream_name.lower()) or "_"
    return fit_identifier(cleaned)


def topic_name(template: str, table: str, stream: str) -> str:
    """Kafka topic from the template (`{table}`, `{stream}` placeholders), made legal."""
    name = template.replace("{table}", table).replace("{stream}", stream)
    return _NOT_TOPIC_CHAR.sub("_", name)[:MAX_TOPIC_CHARS]
