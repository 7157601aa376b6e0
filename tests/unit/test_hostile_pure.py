"""Hostile names and IDs, offline: identifiers, placeholders, entry IDs, undecodable entries."""

from __future__ import annotations

import pytest
from psycopg import sql

from tap_redis_stream.entries import EntryParseError, as_parse_error
from tap_redis_stream.entry_id import MAX_ID, EntryId
from target_batched_postgres.identifiers import fit_identifier
from target_batched_postgres.sql import Identifier, build_insert_dead_letter


def test_nul_bytes_never_reach_an_identifier():
    name = fit_identifier("no\x00te")
    assert "\x00" not in name
    assert name.startswith("note_")
    assert name != fit_identifier("note")
    assert name != fit_identifier("not\x00e")


def test_percent_in_identifiers_survives_placeholders():
    statement = sql.SQL("SELECT {} FROM t WHERE x = %s").format(Identifier("a%sb"))
    assert statement.as_string(None) == 'SELECT "a%%sb" FROM t WHERE x = %s'
    assert "%%" in build_insert_dead_letter("s%", "t").as_string(None)


def test_no_entry_id_follows_the_last_one():
    assert str(MAX_ID) == "18446744073709551615-18446744073709551615"
    assert EntryId(5, 2**64 - 1).next() == EntryId(6, 0)
    with pytest.raises(ValueError, match="no stream entry ID follows"):
        MAX_ID.next()


def test_entries_too_deep_or_unwritable_become_parse_errors():
    assert "nested too deeply" in str(as_parse_error(RecursionError("x")))
    assert "nested too deeply" in str(as_parse_error(TypeError("Recursion limit reached")))
    parse = EntryParseError("bad")
    assert as_parse_error(parse) is parse
