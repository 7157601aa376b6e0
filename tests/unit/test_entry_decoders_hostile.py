"""Hostile entries against the decoders and the reader: each is refused or kept, never a crash.

An entry that makes a decoder raise anything but the failures the reader
handles (`ENTRY_FAILURES`) stops the tap with a bare traceback, even with
`on_parse_error: dead_letter`, and every rerun stops on the same entry.
"""

from __future__ import annotations

import decimal
import io
import json
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from tap_redis_stream.entries import (
    ENTRY_FAILURES,
    EntryParseError,
    Operation,
    as_parse_error,
)
from tap_redis_stream.entries.euler_kv import EulerKvDecoder
from tap_redis_stream.entries.fields import JsonDecoder
from tap_redis_stream.entry_id import EntryId
from tap_redis_stream.messages import MessageWriter
from tap_redis_stream.reader import ParseFailure, Reader, ReaderSettings

HUGE_EXPONENT = "1e9999999999999999999"  # beyond Decimal's exponent range (about 10**18)
TINY_EXPONENT = "1.0e-99999999999999999999"


def kv_envelope(tag: str, model_tag: str, contents: Any) -> bytes:
    return orjson.dumps(
        {
            "contents_v2": {
                "cmdVersion": "V2",
                "command": {"contents": contents, "tag": model_tag},
                "dbName": "postgres",
                "tag": "t",
                "timestamp": 1,
            },
            "mappings": {},
            "tag": tag,
        }
    )


# --- numbers beyond Decimal's range (euler_kv) --------------------------------


@pytest.mark.parametrize("text", [HUGE_EXPONENT, TINY_EXPONENT, "-" + HUGE_EXPONENT])
def test_a_create_with_an_exponent_beyond_decimal_keeps_the_text(text: str) -> None:
    # PostgreSQL refused the drainer's literal in every column type; the text
    # is refused by the numeric column alike, so the target dead-letters it.
    raw = kv_envelope("Create", "FareObject", {"id": '"1"', "fare": text})
    decoder = EulerKvDecoder()
    expected = Operation(table="fare", kind="insert", row={"id": "1", "fare": text})
    assert decoder.decode_command(raw) == expected  # the fast path
    assert decoder._decode_general(raw) == expected


def test_a_where_clause_with_an_exponent_beyond_decimal_keeps_the_text() -> None:
    raw = kv_envelope(
        "Update",
        "FareOptions",
        [
            [{"key": "fare", "value": "1"}],
            [{"clauseTag": "where", "clauseContents": {"fare": {"$gt": TINY_EXPONENT}}}],
        ],
    )
    operation = EulerKvDecoder().decode_command(raw)
    assert operation.where == {"column": "fare", "op": ">", "value": TINY_EXPONENT}


def test_an_arithmetic_error_is_an_entry_failure_worded_for_the_operator() -> None:
    error = decimal.InvalidOperation([decimal.InvalidOperation])
    assert isinstance(error, ENTRY_FAILURES)
    assert isinstance(OverflowError("int too large"), ENTRY_FAILURES)
    message = str(as_parse_error(error))
    assert message.startswith("a number cannot be decoded or written (InvalidOperation")


# --- the reader: a decoder failure dead-letters the entry ---------------------


class _FakeClient:
    display_url = "redis://fake"

    def __init__(self) -> None:
        self.dead_letters: list[tuple[str, str, str, str]] = []

    def dead_letter(
        self,
        failed_stream: str,
        key: str,
        entry_id: EntryId,
        reason: str,
        fields: Mapping[bytes, bytes],
    ) -> None:
        self.dead_letters.append((failed_stream, key, str(entry_id), reason))


class _RaisingDecoder:
    """A decoder that misses one kind of bad number (the safety net's case)."""

    def decode(self, stream_key: str, fields: Mapping[bytes, bytes]) -> Operation:
        if fields.get(b"n") == b"bad":
            decimal.Decimal(HUGE_EXPONENT)  # raises decimal.InvalidOperation
        return Operation(table="t", kind="insert", row={"id": 1})


def _reader(decoder: Any, on_parse_error: str) -> tuple[Reader, _FakeClient, io.BytesIO]:
    settings = ReaderSettings(
        stream_keys=["k"],
        read_count=10,
        start_from="earliest",
        on_parse_error=on_parse_error,
        failed_stream="failed",
        record_limit=None,
        shard_index=0,
        shard_count=1,
        follow=False,
        heartbeat_seconds=5.0,
        trim_acknowledged=False,
    )
    client = _FakeClient()
    out = io.BytesIO()
    reader = Reader(
        settings,
        client,  # type: ignore[arg-type]
        decoder,
        MessageWriter(["id"], out=out),
        bookmarks={},
        stop_requested=lambda: False,
    )
    return reader, client, out


@pytest.mark.parametrize(
    ("decoder", "fields", "reason"),
    [
        pytest.param(_RaisingDecoder(), {b"n": b"bad"}, "a number cannot be decoded", id="decimal"),
        pytest.param(
            JsonDecoder("table", None, "data"),
            {b"data": b'{"table": "t", "op": ["insert"], "row": {"id": 1}}'},
            "envelope 'op' is an array",
            id="json-op-array",
        ),
        pytest.param(
            JsonDecoder("table", None, "data"),
            {b"table": b"t", b"data": b'{"id": 1, "_sdc_operation": "delete"}'},
            "column '_sdc_operation'",
            id="reserved-column",
        ),
    ],
)
def test_the_reader_dead_letters_what_a_decoder_or_writer_refuses(
    decoder: Any, fields: dict[bytes, bytes], reason: str
) -> None:
    reader, client, _ = _reader(decoder, "dead_letter")
    reader.process("k", EntryId(1, 1), fields)
    [(stream, key, entry_id, why)] = client.dead_letters
    assert (stream, key, entry_id) == ("failed", "k", "1-1")
    assert reason in why
    assert reader.bookmarks["k"] == EntryId(1, 1)  # and the tap goes on

    stopping, _, out = _reader(decoder, "stop")
    with pytest.raises(ParseFailure, match=f"stream 'k', entry 1-1: .*{reason}"):
        stopping.process("k", EntryId(1, 1), fields)
    assert [json.loads(line)["type"] for line in out.getvalue().splitlines()] == ["STATE"]


# --- entry_format = json: the envelope -----------------------------------------


def json_decode(body: bytes) -> Operation:
    return JsonDecoder("table", "{stream}", "data").decode("orders{shard-1}", {b"data": body})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"op": ["insert"], "row": {"id": 1}}', "envelope 'op' is an array, expected 'insert'"),
        (b'{"op": {"x": 1}, "row": {"id": 1}}', "envelope 'op' is an object"),
        (b'{"op": 1, "row": {"id": 1}}', "envelope 'op' is a number"),
        (b'{"op": null, "row": {"id": 1}}', "envelope 'op' is null"),
        (b'{"op": "merge", "row": {"id": 1}}', "unknown op 'merge'"),
    ],
)
def test_a_json_envelope_op_that_is_not_an_operation_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(EntryParseError, match=message):
        json_decode(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # A plain row with a column named "op" is taken as an envelope: refused,
        # never an insert of no columns.
        (b'{"id": 7, "op": "insert", "name": "x"}', "insert envelope has no 'row'"),
        (b'{"op": "insert"}', "insert envelope has no 'row'"),
        (b'{"row": {}}', "insert envelope has an empty 'row'"),
        (
            b'{"op": "update", "row": {}, "where": {"column": "id", "op": "=", "value": 1}}',
            "update envelope has an empty 'row'",
        ),
        (
            b'{"op": "update", "where": {"column": "id", "op": "=", "value": 1}}',
            "update envelope has no 'row'",
        ),
        (b'{"row": [1]}', "envelope 'row' is an array, expected an object"),
    ],
)
def test_a_json_envelope_without_columns_to_write_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(EntryParseError, match=message) as caught:
        json_decode(body)
    assert "orders" not in str(caught.value)  # the reader adds stream key and entry ID


def test_valid_json_envelopes_decode_as_documented() -> None:
    where = {"column": "id", "op": "=", "value": 1}
    assert json_decode(b'{"row": {"id": 1}}') == Operation("orders", "insert", {"id": 1})
    assert json_decode(b'{"op": "insert", "row": {"id": 1}, "table": "x"}') == Operation(
        "x", "insert", {"id": 1}
    )
    update = orjson.dumps({"op": "update", "row": {"a": 1}, "where": where, "force_drain": True})
    assert json_decode(update) == Operation("orders", "update", {"a": 1}, where, True)
    # A delete needs no row.
    delete = orjson.dumps({"op": "delete", "where": where})
    assert json_decode(delete) == Operation("orders", "delete", {}, where)
    # A plain row (no "op" or "row" key) is the row itself.
    assert json_decode(b'{"id": 7, "name": "x"}') == Operation(
        "orders", "insert", {"id": 7, "name": "x"}
    )
