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


TOPIC_PLACEHOLDERS = ("{table}", "{stream}")
_TOPIC_PLACEHOLDER = re.compile(r"\{(?:table|stream)\}")


def topic_name(template: str, table: str, stream: str) -> str:
    """Kafka topic from the template (`{table}`, `{stream}` placeholders), made legal.

    Characters a topic cannot hold become `_`; a name over 249 characters is
    shortened with a hash suffix of the whole, as `fit_identifier` shortens
    table names, so two long names sharing their start stay two topics.
    """
    name = template.replace("{table}", table).replace("{stream}", stream)
    name = _NOT_TOPIC_CHAR.sub("_", name)
    if name in ("", ".", ".."):  # names Kafka refuses (a stream named "." or "..")
        name = "_" * max(len(name), 1)
    if len(name) <= MAX_TOPIC_CHARS:
        return name
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:_HASH_CHARS]
    return f"{name[: MAX_TOPIC_CHARS - _HASH_CHARS - 1]}_{digest}"


def topic_template_problem(template: str) -> str | None:
    """Why `template` cannot name topics, or None when it can.

    Only `{table}` and `{stream}` are placeholders; the text around them must
    be what a topic name holds (`[A-Za-z0-9._-]`, 249 characters at most), so
    that a typo (`{tabel}`, `{Table}`) or a stray character is refused rather
    than silently sending every table to one topic or renaming topics. Fixed
    text that leaves no room for the table's name (the hash suffix aside) is
    refused too.
    """
    fixed = _TOPIC_PLACEHOLDER.sub("", template)
    if not template:
        return "is empty; a topic name needs 1 to 249 characters"
    if template in (".", ".."):
        return f"{template!r} is not a legal Kafka topic name"
    if "{" in fixed or "}" in fixed:
        return (
            f"{template!r} holds an unknown placeholder or a stray brace; the placeholders "
            f"are {' and '.join(TOPIC_PLACEHOLDERS)} (lower case)"
        )
    illegal = sorted(set(_NOT_TOPIC_CHAR.findall(fixed)))
    if illegal:
        return (
            f"{template!r} holds {', '.join(map(repr, illegal))}, which a Kafka topic name "
            "cannot; a topic name holds only letters, digits, '.', '_' and '-'"
        )
    room = MAX_TOPIC_CHARS - _HASH_CHARS - 1
    if len(fixed) > room and fixed != template:
        return (
            f"its fixed text is {len(fixed)} characters, leaving no room in a topic name "
            f"({MAX_TOPIC_CHARS} characters at most) for the table or stream name"
        )
    if len(fixed) > MAX_TOPIC_CHARS:
        return f"is {len(fixed)} characters; a topic name holds {MAX_TOPIC_CHARS} at most"
    return None
