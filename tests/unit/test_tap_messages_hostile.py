"""The tap's message encoder against hostile text: what goes in as text comes out as text."""

from __future__ import annotations

import decimal
import io
import json

import pytest

from tap_redis_stream.entries import Operation
from tap_redis_stream.messages import MessageWriter, dumps


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
