"""NUL bytes: found in any column at any depth, stripped without recursion, named in reasons."""

from __future__ import annotations

from target_batched_postgres.dead_letter import DeadLetter
from target_batched_postgres.nul_bytes import describe_nul, nul_column, strip_nul


def test_strip_removes_nul_from_every_string_and_key():
    record = {"a\x00": ["x\x00y", {"k": "v\x00", "n": [1, None, "q\x00"]}], "b": 2, "c": "ok"}
    assert strip_nul(record) == {"a": ["xy", {"k": "v", "n": [1, None, "q"]}], "b": 2, "c": "ok"}
    assert strip_nul("\x00") == ""
    clean = {"x": [1, {"y": "z"}]}
    assert strip_nul(clean) is clean  # nothing to strip: no copy


def test_strip_and_find_at_any_depth_without_recursion():
    deep: list = []
    inner = deep
    for _ in range(20_000):
        inner.append([])
        inner = inner[0]
    inner.append("a\x00b")
    assert nul_column({"id": 1, "doc": deep}) == "doc"
    stripped = strip_nul(deep)
    assert nul_column({"doc": stripped}) is None


def test_nul_column_skips_source_but_checks_changes():
    assert nul_column({"id": 1, "_sdc_source_stream": "s\x00"}) is None
    assert nul_column({"_sdc_where": {"column": "id", "op": "=", "value": "a\x00"}}) == "_sdc_where"
    assert nul_column({"note": "x", "tag": "y\x00"}) == "tag"


def test_dead_letter_reason_names_the_column_only_when_the_nul_caused_it():
    record = {"id": 1, "note": "a\x00b", "n": "x"}
    nul_error = "PostgreSQL text fields cannot contain NUL (0x00) bytes"
    reason = describe_nul(record, nul_error, None)
    assert reason.startswith("column 'note' holds a NUL byte (U+0000)")
    assert reason.endswith(nul_error)
    assert "'note' holds a NUL byte" in DeadLetter("t", record, "x", "22P05").params()[2]
    escaped = {"doc": '{"k": "v\\u0000"}'}
    assert "'doc' holds JSON text with the escape" in describe_nul(escaped, "bad", "22P05")
    other = 'invalid input syntax for type integer: "x"'
    assert describe_nul(record, other, "22P02") == other
