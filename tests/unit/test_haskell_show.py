"""Haskell `show` values as the KV format sends them (spec: "Values V")."""

from __future__ import annotations

import decimal
import random
from typing import Any

import pytest

from tap_redis_stream.entries.haskell_show import (
    HaskellShowError,
    decode_json_value,
    json_type_name,
    parse_string,
    parse_value,
)
from tests.kv_workload import haskell_string

# GHC's asciiTab: how `show` spells code points 0..32.
# fmt: off
ASCII_TAB = (
    "NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL",
    "BS", "HT", "LF", "VT", "FF", "CR", "SO", "SI",
    "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB",
    "CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US", "SP",
)
# fmt: on


def ghc_show_string(text: str) -> str:
    """GHC's `showLitString`, written from base's GHC.Show, as an independent encoder."""
    out = ['"']
    for index, char in enumerate(text):
        following = text[index + 1 : index + 2]
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif code > 127:
            out.append(f"\\{code}" + ("\\&" if following.isdigit() else ""))
        elif code == 127:
            out.append("\\DEL")
        elif char == "\\":
            out.append("\\\\")
        elif code >= 32:
            out.append(char)
        elif char in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(char)])
        elif code == 14:
            out.append("\\SO" + ("\\&" if following == "H" else ""))
        else:
            out.append("\\" + ASCII_TAB[code])
    out.append('"')
    return "".join(out)


# --- value forms -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SqlNull", None),
        ('"text"', "text"),
        ('""', ""),
        ('"Meter"', "Meter"),
        ('"9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3"', "9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3"),
        # A JSON column: the body stays text, never parsed.
        ('"{\\"base\\":5,\\"tax\\":[1,2.5]}"', '{"base":5,"tax":[1,2.5]}'),
        ('"[1,2]"', "[1,2]"),
        # Unquoted text that PostgreSQL casts.
        ("True", "True"),
        ("False", "False"),
        ("2024-06-01 10:15:30.123456 UTC", "2024-06-01 10:15:30.123456 UTC"),
        ("2024-06-01", "2024-06-01"),
        ("10:15:30", "10:15:30"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("NaN", "NaN"),
        ("", ""),
        ("-", "-"),
        ("1.", "1."),
        ("Just 5", "Just 5"),
        ("sqlnull", "sqlnull"),
        ("1\u0663", "1\u0663"),  # a non-ASCII digit: not a Haskell-shown number
        # Number-like text the fast paths must leave as text, as the regex does.
        (".5", ".5"),
        ("-.5", "-.5"),
        ("1.5.5", "1.5.5"),
        ("1_000.5", "1_000.5"),  # Decimal() would take it
        ("\u0663.5", "\u0663.5"),
        ("1.\u0663", "1.\u0663"),
        ("-\u0663", "-\u0663"),
        ("-123-4", "-123-4"),
        ("1234-5678", "1234-5678"),
        ("12345-", "12345-"),
        ("+1.5", "+1.5"),
    ],
)
def test_scalar_forms(text: str, expected: Any) -> None:
    result = parse_value(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("850", 850),
        ("0", 0),
        ("-7", -7),
        ("007", 7),
        ("-0", 0),
        ("12345678901234567890", 12345678901234567890),
    ],
)
def test_integers_are_int(text: str, expected: int) -> None:
    result = parse_value(text)
    assert type(result) is int
    assert result == expected


@pytest.mark.parametrize(
    ("text", "expected_text"),
    [
        # str(Decimal) is what the target renders; PostgreSQL's numeric gives
        # the same text for the drainer's literal (scale included).
        ("850.0", "850.0"),
        ("12.9716", "12.9716"),
        ("-3.5", "-3.5"),
        ("1.0e-2", "0.010"),
        ("1.5e7", "15000000"),
        ("1.5e1", "15"),
        ("1e7", "10000000"),
        ("2.5E+3", "2500"),
        ("0.1", "0.1"),
        ("1.0e-8", "1.0E-8"),  # equal as a number; PostgreSQL would print 0.000000010
        (
            "12345678901234567890.123456789012345678901",
            "12345678901234567890.123456789012345678901",
        ),
        ("1e1001", "1E+1001"),  # beyond numeric's exponent range: left for PostgreSQL to refuse
        ("123e-4", "0.0123"),  # a `-` at offset 4 after an exponent: a number, not a date
        ("1234E-4", "0.1234"),
        ("-00.10", "-0.10"),
    ],
)
def test_fractions_and_exponents_are_exact_decimals(text: str, expected_text: str) -> None:
    result = parse_value(text)
    assert type(result) is decimal.Decimal
    assert str(result) == expected_text
    assert result == decimal.Decimal(text)


def test_huge_integer_beyond_int_digit_limit_stays_exact() -> None:
    text = "9" * 5000
    result = parse_value(text)
    assert isinstance(result, decimal.Decimal)
    assert format(result, "f") == text
    negative = parse_value("-" + text)
    assert isinstance(negative, decimal.Decimal)
    assert format(negative, "f") == "-" + text


def test_array_of_values() -> None:
    assert decode_json_value(['"a"', '"b c"', "SqlNull", "7", "1.5", "True"]) == [
        "a",
        "b c",
        None,
        7,
        decimal.Decimal("1.5"),
        "True",
    ]
    assert decode_json_value([]) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (850, "value is a number, expected a string or an array of strings"),
        (8.5, "value is a number"),
        (True, "value is a boolean"),
        (None, "value is null"),
        ({"a": "1"}, "value is an object"),
        (['"a"', 1], "array element 1 is a number, expected a string"),
        (['"a"', None], "array element 1 is null"),
        ([['"a"']], "array element 0 is an array"),
        (['"bad\\q"'], "invalid escape \\q at offset 4"),
    ],
)
def test_decode_json_value_rejects(value: object, message: str) -> None:
    with pytest.raises(HaskellShowError) as caught:
        decode_json_value(value)
    assert message in str(caught.value)


def test_json_type_names() -> None:
    values: tuple[object, ...] = (None, True, 1, 1.5, "s", [], {})
    assert [json_type_name(v) for v in values] == [
        "null",
        "a boolean",
        "a number",
        "a number",
        "a string",
        "an array",
        "an object",
    ]


# --- string escapes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ('"a\\"b"', 'a"b'),
        ('"back\\\\slash"', "back\\slash"),
        ('"\\n\\t\\r"', "\n\t\r"),
        ('"\\a\\b\\f\\v"', "\a\b\f\v"),
        ('"it\\\'s"', "it's"),
        ('"\\0"', "\0"),
        ('"caf\\233"', "caf\u00e9"),
        ('"\\1234"', "\u04d2"),
        ('"\\1234\\&5"', "\u04d25"),
        ('"\\8364\\&5"', "\u20ac5"),
        ('"a\\&b"', "ab"),
        ('"\\&"', ""),
        ('"\\128512"', "\U0001f600"),
        ('"\\1114111"', "\U0010ffff"),
        ('"\\0000065"', "A"),
        ('"\\x41\\x4d2\\x10FFFF"', "A\u04d2\U0010ffff"),
        ('"\\xff"', "\u00ff"),
        ('"\\o101\\o2322"', "A\u04d2"),
        ('"\\NUL\\SOH\\DEL\\ESC\\SP"', "\x00\x01\x7f\x1b "),
        ('"\\SOH"', "\x01"),
        ('"\\SO\\&H"', "\x0eH"),
        ('"\\SOx"', "\x0ex"),
        ('"\\^@\\^A\\^Z\\^[\\^\\\\^]\\^^\\^_"', "\x00\x01\x1a\x1b\x1c\x1d\x1e\x1f"),
        ('"ab\\   \\cd"', "abcd"),
        ('"ab\\\n\t \\cd"', "abcd"),
        ('"\\"\\""', '""'),
        ('"\\\\"', "\\"),
        ('"\\\\\\""', '\\"'),
        # JSON-compatible escapes take orjson; raw control characters (which
        # JSON refuses) and non-ASCII text must come out the same.
        ('"a\\"\x01\tb"', 'a"\x01\tb'),
        ('"\u00e9\\"x\\\\"', '\u00e9"x\\'),
    ],
)
def test_escapes(literal: str, expected: str) -> None:
    assert parse_string(literal) == expected
    assert parse_value(literal) == expected


@pytest.mark.parametrize(("code", "name"), list(enumerate(ASCII_TAB)))
def test_every_ascii_control_name(code: int, name: str) -> None:
    assert parse_value(f'"<\\{name}>"') == f"<{chr(code)}>"


@pytest.mark.parametrize(
    ("literal", "message"),
    [
        ('"abc', "lacks its closing quote"),
        ('"', "lacks its closing quote"),
        ('abc"', None),  # not a quoted string at all: unquoted text (see below)
        ('"a"b"', 'unescaped " at offset 2'),
        ('"a\\nb"c"', 'unescaped " at offset 5'),
        ('"abc\\"', "backslash at the end of a quoted string"),
        ('"\\q"', "invalid escape \\q at offset 1"),
        ('"ok\\z"', "invalid escape \\z at offset 3"),
        ('"\u00e9\\"x\\/"', "invalid escape \\/ at offset 5"),  # JSON's \/ is not Haskell's
        ('"\\X41"', "invalid escape \\X at offset 1"),
        ('"\\ABC"', "invalid escape \\A at offset 1"),
        ('"\\x"', "numeric escape without digits at offset 1"),
        ('"\\xg"', "numeric escape without digits"),
        ('"\\o8"', "numeric escape without digits"),
        ('"\\1114112"', "exceeds U+10FFFF"),
        ('"\\x110000"', "exceeds U+10FFFF"),
        ('"\\o4200000"', "exceeds U+10FFFF"),
        ('"\\' + "9" * 5000 + '"', "exceeds U+10FFFF"),
        ('"\\^a"', "invalid control escape \\^a at offset 1"),
        ('"\\^"', "invalid control escape"),
        ('"ab\\  cd"', "unterminated string gap at offset 3"),
        ('"ab\\  "', "unterminated string gap"),
    ],
)
def test_invalid_strings(literal: str, message: str | None) -> None:
    if message is None:
        assert parse_value(literal) == literal
        return
    with pytest.raises(HaskellShowError) as caught:
        parse_value(literal)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        'quote"d',
        "back\\slash",
        "new\nline",
        "tab\there",
        "caf\u00e9 \u20ac5",
        "semi;colon'",
        "\u20ac123",
        "\x0eH\x0eh",
        "".join(map(chr, range(160))),
        '{"json": [1, "two"]}',
    ],
)
def test_round_trip_through_independent_encoders(text: str) -> None:
    assert parse_value(ghc_show_string(text)) == text
    assert parse_value(haskell_string(text)) == text


def test_round_trip_random_text() -> None:
    rnd = random.Random(7)
    alphabet = [chr(c) for c in (*range(200), 0x20AC, 0x4D2, 0xFFFF, 0x1F600, 0x10FFFF)]
    alphabet += list("0123456789H\\\"'")
    for _ in range(500):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(12)))
        assert parse_value(ghc_show_string(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "1e9999999999999999999",
        "1.0e-99999999999999999999",
        "-1e9999999999999999999",
        "1E+1000000000000000000",
        "2.5e-10000000000000000000",
    ],
)
def test_exponents_beyond_decimal_stay_text(text: str) -> None:
    # PostgreSQL refused the drainer's literal ("value overflows numeric
    # format"); a numeric, integer or float column refuses the text alike.
    assert parse_value(text) == text
    assert decode_json_value([text, "1"]) == [text, 1]


def test_the_largest_exponents_decimal_holds_stay_decimals() -> None:
    assert parse_value("1e999999999999999999") == decimal.Decimal("1E+999999999999999999")
    assert parse_value("1e-999999999999999999") == decimal.Decimal("1E-999999999999999999")
