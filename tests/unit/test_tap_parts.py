"""Pure parts of the tap: entry IDs, schema inference, exact decimals, fields/json decoders."""

from __future__ import annotations

import decimal
import io
import json
from typing import Any

import pytest

from tap_redis_stream.client import _xread_reply, is_pattern, owns
from tap_redis_stream.entries import EntryParseError, Operation
from tap_redis_stream.entries.fields import FieldsDecoder, JsonDecoder, stream_base
from tap_redis_stream.entry_id import EntryId
from tap_redis_stream.messages import MessageWriter, TableSchema, _TextAdapter, dumps
from tap_redis_stream.reader import bookmarks_from_state


def test_entry_ids_order_as_numbers():
    ids = [EntryId.parse(t) for t in ["1-10", "1-9", "2-0", "0-1", "10-0"]]
    assert [str(i) for i in sorted(ids)] == ["0-1", "1-9", "1-10", "2-0", "10-0"]
    assert EntryId.parse(b"5") == EntryId(5, 0)
    assert EntryId(7, 2**64 - 1).next() == EntryId(8, 0)
    with pytest.raises(ValueError, match="not a stream entry ID"):
        EntryId.parse("x-1")


@pytest.mark.parametrize("resp3", [False, True])
def test_xread_reply_becomes_the_batch_in_one_pass(resp3):
    entries_a = [[b"1-1", [b"command", b"x"]], [b"1-2", [b"a", b"1", b"b", b"2"]]]
    entries_b = [[b"7-0", [b"f", b"v"]]]
    reply = (
        {b"s{a}": entries_a, b"s{b}": entries_b}
        if resp3
        else [[b"s{a}", entries_a], [b"s{b}", entries_b]]
    )
    assert _xread_reply(reply) == [
        ("s{a}", [(EntryId(1, 1), {b"command": b"x"}), (EntryId(1, 2), {b"a": b"1", b"b": b"2"})]),
        ("s{b}", [(EntryId(7, 0), {b"f": b"v"})]),
    ]
    assert _xread_reply(None) == []
    assert _xread_reply({} if resp3 else []) == []


def test_xread_reply_ids_parse_as_entry_id_parse_does():
    # The reply's IDs take a shorter parse; what it refuses gets EntryId.parse's.
    assert _xread_reply([[b"k", [[b"5", [b"f", b"v"]], [b"5-3", [b"f", b"v"]]]]]) == [
        ("k", [(EntryId(5, 0), {b"f": b"v"}), (EntryId(5, 3), {b"f": b"v"})])
    ]
    with pytest.raises(ValueError, match="not a stream entry ID: '1-x'"):
        _xread_reply([[b"k", [[b"1-1", [b"f", b"v"]], [b"1-x", [b"f", b"v"]]]]])


def test_bookmarks_from_state():
    assert bookmarks_from_state({"stream_ids": {"k": "1-10"}}) == {"k": EntryId(1, 10)}
    assert bookmarks_from_state(None) == {}


def test_patterns_and_shard_ownership():
    assert is_pattern("rider-db-sync-stream{shard-*}")
    assert not is_pattern("rider-db-sync-stream{shard-5}")
    keys = [f"k{{shard-{i}}}" for i in range(50)]
    owners = [[k for k in keys if owns(k, i, 3)] for i in range(3)]
    assert sorted(k for group in owners for k in group) == sorted(keys)
    assert all(owners)


def test_schema_widens_and_reports_changes():
    table = TableSchema("t", ["id"])
    assert table.observe({"id": 1, "x": None})
    assert not table.observe({"id": 2, "x": None})
    assert table.observe({"id": 3, "x": 5})  # null-only column gets a type
    assert table.observe({"id": 4, "x": decimal.Decimal("1.5")})  # integer -> number
    assert table.observe({"id": 5, "x": "text"})  # number + string -> any
    props = table.json_schema()["properties"]
    assert props["id"] == {"type": "integer"}
    assert props["x"] == {}
    assert table.key_properties == ["id"]
    assert TableSchema("u", ["id"]).key_properties == []


def test_decimal_marker_only_rewrites_decimals():
    assert dumps({"a": decimal.Decimal("0.010")}) == b'{"a":0.010}'
    assert dumps({"s": "plain"}) == b'{"s":"plain"}'


def test_writer_emits_schema_once_then_on_growth():
    out = io.BytesIO()
    writer = MessageWriter(["id"], out=out)
    writer.record(Operation("t", "insert", {"id": 1}), "k", "1-1")
    writer.record(Operation("t", "insert", {"id": 2}), "k", "1-2")
    writer.record(Operation("t", "insert", {"id": 3, "y": "z"}), "k", "1-3")
    assert out.getvalue() == b""  # held back until the batch's STATE (or a flush)
    writer.flush()
    kinds = [line.split(b'"type":"')[1].split(b'"')[0] for line in out.getvalue().splitlines()]
    assert kinds == [b"SCHEMA", b"RECORD", b"RECORD", b"SCHEMA", b"RECORD"]


@pytest.mark.parametrize("force_drain", [False, True])
@pytest.mark.parametrize(
    ("table", "stream_key"),
    [("t", "k"), ('we"ird\\tab\u00e9', 'ke"y{shard-\u20ac}'), ("record", '"record":{"":0,')],
)
def test_an_insert_line_is_the_message_encoded_whole(table, stream_key, force_drain):
    # Inserts are spliced from cached bytes around the row's encoding; the
    # bytes must be those of the whole message encoded at once.
    out = io.BytesIO()
    writer = MessageWriter(["id"], out=out)
    rows: list[dict[str, Any]] = [
        {"id": 1},
        {
            "id": 2,
            "n": decimal.Decimal("1.50"),
            "s": 'q"\\\u00e9\n',
            "l": [None, "a"],
            "j": {"k": 1},
        },
    ]
    for n, row in enumerate(rows):
        writer.record(
            Operation(table, "insert", row, force_drain=force_drain), stream_key, f"9-{n}"
        )
    writer.flush()
    records = [line for line in out.getvalue().splitlines() if b'"type":"RECORD"' in line]
    expected = [
        dumps(
            {
                "type": "RECORD",
                "stream": table,
                "record": {
                    **row,
                    "_sdc_operation": "insert",
                    "_sdc_force_drain": force_drain,
                    "_sdc_source_stream": stream_key,
                    "_sdc_source_entry_id": f"9-{n}",
                },
            }
        )
        for n, row in enumerate(rows)
    ]
    assert records == expected


def test_fields_decoder():
    decoder = FieldsDecoder("table", None)
    op = decoder.decode(
        "k", {b"table": b"orders", b"id": b"7", b"n": b"-1.5", b"s": b"hello", b"j": b"[1]"}
    )
    assert op == Operation("orders", "insert", {"id": 7, "n": -1.5, "s": "hello", "j": [1]})
    templated = FieldsDecoder("table", "t_{stream}").decode("orders{shard-1}", {b"table": b"x"})
    assert templated.table == "t_orders"
    assert templated.row == {"table": "x"}
    with pytest.raises(EntryParseError, match="missing the table field"):
        decoder.decode("k", {b"id": b"1"})
    with pytest.raises(EntryParseError, match="UTF-8"):
        decoder.decode("k", {b"table": b"t", b"id": b"\xff"})


def test_json_decoder_envelope_and_errors():
    decoder = JsonDecoder("table", "{stream}", "data")
    assert decoder.decode("t{s}", {b"data": b'{"id": 1}'}) == Operation("t", "insert", {"id": 1})
    upd = decoder.decode(
        "t",
        {
            b"data": b'{"op": "update", "row": {"a": 1}, "where": {"column": "id", "op": "=", "value": 1}}'
        },
    )
    assert (upd.kind, upd.row, upd.where) == (
        "update",
        {"a": 1},
        {"column": "id", "op": "=", "value": 1},
    )
    for payload, reason in [
        (b"{", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"op": "merge"}', "unknown op"),
        (b'{"op": "delete"}', "without a 'where'"),
        (b"{}", "no columns"),
    ]:
        with pytest.raises(EntryParseError, match=reason):
            decoder.decode("t", {b"data": payload})
    assert stream_base("a{b}c{d}") == "ac"


def test_a_table_first_seen_in_a_delete_gets_a_schema():
    out = io.BytesIO()
    writer = MessageWriter(["id"], out=out)
    writer.record(
        Operation("t", "delete", {}, where={"column": "id", "op": "=", "value": 1}), "k", "1-1"
    )
    writer.flush()
    assert [line.split(b'"type":"')[1][:6] for line in out.getvalue().splitlines()] == [
        b"SCHEMA",
        b"RECORD",
    ]


class _ShortWrites(io.BytesIO):
    """Takes at most 7 bytes per write and says so, as an interrupted pipe write does."""

    def write(self, data: Any, /) -> int:
        return super().write(bytes(data[:7]))


def test_writer_finishes_writes_the_stream_cuts_short():
    out = _ShortWrites()
    writer = MessageWriter(["id"], out=out)
    for n in range(3):
        writer.record(Operation("t", "insert", {"id": n, "s": "café €"}), "k", f"1-{n}")
    writer.state({"stream_ids": {"k": "1-2"}})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [m["type"] for m in lines] == ["SCHEMA", "RECORD", "RECORD", "RECORD", "STATE"]
    assert lines[3]["record"]["s"] == "café €"


def test_text_stdout_counts_bytes_written():
    text = io.StringIO()
    adapter = _TextAdapter(text)
    assert adapter.write(memoryview("é€\n".encode())) == 6
    assert text.getvalue() == "é€\n"
