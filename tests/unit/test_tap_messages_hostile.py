"""The tap's message encoder against hostile text: what goes in as text comes out as text."""

from __future__ import annotations

import decimal
import io
import json

import pytest

from tap_redis_stream import control
from tap_redis_stream.entries import EntryParseError, Operation
from tap_redis_stream.messages import MessageWriter, TableSchema, dumps


@pytest.mark.parametrize(
    "text",
    [
        "\x00decimal:true",  # the old fixed mark: came out as a bare JSON true
        '\x00decimal:1, "x": 2',  # came out as a broken line that stopped the target
        "\x00decimal:",
        "\x00",
        "a\x00b",
    ],
)
def test_text_holding_nul_bytes_stays_text(text):
    line = dumps({"type": "RECORD", "record": {"c": text, "n": decimal.Decimal("1.10")}})
    assert json.loads(line, parse_float=decimal.Decimal) == {
        "type": "RECORD",
        "record": {"c": text, "n": decimal.Decimal("1.10")},
    }


def test_decimals_stay_exact_numbers():
    line = dumps({"a": decimal.Decimal("0.010"), "b": [decimal.Decimal("1E+3")]})
    assert line == b'{"a":0.010,"b":[1E+3]}'


def test_a_record_that_cannot_be_encoded_leaves_no_partial_line():
    out = io.BytesIO()
    writer = MessageWriter([], out=out)
    writer.record(Operation(table="t", kind="insert", row={"a": "fine"}), "s", "1-1")
    with pytest.raises(UnicodeEncodeError):
        writer.record(Operation(table="t", kind="insert", row={"a": "\ud800"}), "s", "1-2")
    writer.record(Operation(table="t", kind="insert", row={"a": "after"}), "s", "1-3")
    writer.state({"stream_ids": {"s": "1-3"}})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [m["type"] for m in lines] == ["SCHEMA", "RECORD", "RECORD", "STATE"]
    assert [m["record"]["a"] for m in lines if m["type"] == "RECORD"] == ["fine", "after"]


@pytest.mark.parametrize("column", sorted(control.CONTROL_PROPERTIES))
def test_a_column_named_like_a_control_property_is_refused(column):
    out = io.BytesIO()
    writer = MessageWriter(["id"], out=out)
    row = {"id": 1, column: "from the row"}
    for entry_id in ("1-1", "1-2"):  # the second time the row's shape is not new
        with pytest.raises(EntryParseError, match=f"table 't': column '{column}' has the name"):
            writer.record(Operation(table="t", kind="insert", row=row), "s", entry_id)
    assert writer.records_written == 0
    assert writer.tables == {}


def test_every_reserved_column_is_named():
    writer = MessageWriter([], out=io.BytesIO())
    row = {"_sdc_where": 1, "a": 2, "_sdc_model": 3}
    with pytest.raises(EntryParseError, match="columns '_sdc_model', '_sdc_where' have the name"):
        writer.record(Operation(table="t", kind="insert", row=row), "s", "1-1")


def test_a_table_whose_first_row_is_refused_still_gets_a_schema():
    # A delete has no columns: it writes a SCHEMA only for a table not seen yet.
    out = io.BytesIO()
    writer = MessageWriter(["id"], out=out)
    with pytest.raises(EntryParseError):
        writer.record(Operation("t", "insert", {"id": 1, "_sdc_operation": "x"}), "s", "1-1")
    where = {"column": "id", "op": "=", "value": 1}
    writer.record(Operation("t", "delete", {}, where=where), "s", "1-2")
    writer.record(Operation("t", "insert", {"id": 2}), "s", "1-3")
    writer.state({"stream_ids": {"s": "1-3"}})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [m["type"] for m in lines] == ["SCHEMA", "RECORD", "SCHEMA", "RECORD", "STATE"]
    assert [m["record"]["_sdc_source_entry_id"] for m in lines if m["type"] == "RECORD"] == [
        "1-2",
        "1-3",
    ]


def test_discovery_schemas_do_not_refuse_reserved_names():
    # Discovery builds TableSchemas without reserved names: it lists, never refuses.
    table = TableSchema("t", ["id"])
    assert table.observe({"id": 1, "_sdc_operation": "x"}) is True
