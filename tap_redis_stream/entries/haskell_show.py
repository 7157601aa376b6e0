r"""Decode the Haskell `show` text that carries each value of a KV-connector entry.

The spec (shared/spec/euler-kv-format.md, "Values V") sends every column value
as a JSON string holding Haskell `show` output, or a JSON array of such
strings. Decoded forms, chosen so that PostgreSQL stores exactly what it stored
from the old drainer's SQL literal for the same value:

- `"SqlNull"` -> `None` (NULL).
- `"\"text\""` (starts with a quote) -> `str`, unescaped: the drainer's quoted
  literal.
- `"850"`, `"-7"` -> `int`: the drainer's bare integer literal.
- `"850.0"`, `"1.0e-2"`, `"-3.5"` -> `decimal.Decimal`: exact, see below.
- a number whose exponent `Decimal` cannot hold (beyond about +-10**18, e.g.
  `"1e9999999999999999999"`) -> `str`, unchanged, see below.
- anything else (`"True"`, `"2024-06-01"`, `"2024-06-01 10:15:30.5 UTC"`,
  `"Infinity"`, `"NaN"`, `""`) -> `str`, unchanged: PostgreSQL casts the text
  as it cast the drainer's quoted literal.
- a JSON array such as `["\"a\"", "SqlNull"]` -> a `list` of the above (a
  PostgreSQL array).

A quoted string whose body is JSON (a json/jsonb column) stays a `str`: it is
never JSON-parsed here, PostgreSQL casts the text as it cast the drainer's.

Numbers with a fraction or exponent become `Decimal`, never `float`: the
drainer's literal `1.0e-2` is a PostgreSQL numeric constant, stored in a
numeric column as `0.010` (a float would give `0.01`), and `1.5e7` as
`15000000` (a float would give `15000000.0`); a double precision column
parses the same decimal text either way. `Decimal` keeps every digit and the
scale; positive exponents are expanded (`1.5e7` -> `Decimal("15000000")`) to
match PostgreSQL's scale. Only in a *text* column can a tiny number differ:
`Decimal("1.0E-8")` renders as `1.0E-8` where PostgreSQL's numeric text is
`0.000000010`. `Infinity`, `-Infinity` and `NaN` stay text: they are not JSON
numbers, and both float8 and numeric accept them as text.

A number with an exponent beyond `Decimal`'s range (its magnitude past about
10**18) also stays text, unchanged, rather than failing the entry:
PostgreSQL parsed the drainer's literal with numeric's reader, which refuses
any exponent that large ("value overflows numeric format"), so the drainer's
statement failed and stored nothing. The same text bound for a numeric,
integer or double precision column (where a Haskell number goes) is refused
just so, and the record dead-letters in the target as the drainer's write
failed; the rest of the stream goes on, as it did for the drainer. Only a
text column would store it, and a Haskell number is not sent for one.

`True`/`False` stay the strings `"True"`/`"False"`: a boolean column accepts
them, a text column stores them as written, as with the drainer's `'True'`.

String escapes are Haskell's (the Haskell 2010 report, section 2.6): `\a \b
\f \n \r \t \v \\ \" \'`, decimal (`\1234`), hex (`\x4d2`) and octal
(`\o2322`) code points, the ASCII control names (`\NUL`, `\SOH` ... `\DEL`,
longest match first, so `\SOH` is SOH and `\SO\&H` is SO then `H`), `\^A`
style controls, `\&` (empty, separates a numeric escape from a following
digit) and string gaps (backslash, white space, backslash). Anything else after
a backslash, a code point above U+10FFFF, or an unescaped `"` inside the quotes
is an error.
"""

from __future__ import annotations

import decimal
import re

import orjson

__all__ = [
    "HaskellShowError",
    "Scalar",
    "decode_json_value",
    "json_type_name",
    "parse_string",
    "parse_value",
]

Scalar = str | int | decimal.Decimal | None
"""One decoded value: text for PostgreSQL to cast, an integer, an exact number or NULL."""

SQL_NULL = "SqlNull"
_MAX_CODE_POINT = 0x10FFFF
# PostgreSQL's numeric rejects exponents beyond this; expanding a larger one
# would only build a huge string for PostgreSQL to reject as it did the literal.
_MAX_EXPANDED_EXPONENT = 1000

# A number with an exponent (`1.0e-2`, `1e7`): one compiled match per value.
# Integers and plain fractions are told apart with string methods first.
_EXPONENT_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?[eE][-+]?[0-9]+")
_NUMBER_STARTS = frozenset("-0123456789")
_DECIMAL_DIGITS = re.compile(r"[0-9]+")
_HEX_DIGITS = re.compile(r"[0-9A-Fa-f]+")
_OCTAL_DIGITS = re.compile(r"[0-7]+")
# A backslash followed by anything but the escapes Haskell and JSON spell
# alike (\" \\ \n \r \t \b \f): such a literal needs the full decoder.
_NOT_A_JSON_ESCAPE = re.compile(r'\\[^"\\nrtbf]')

_SINGLE_CHAR_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}

# Names of code points 0..31, in order, as Haskell's lexer spells them.
# fmt: off
_CONTROL_NAMES = (
    "NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL",
    "BS", "HT", "LF", "VT", "FF", "CR", "SO", "SI",
    "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB",
    "CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US",
)
# fmt: on
_ASCII_NAMES = {name: chr(code) for code, name in enumerate(_CONTROL_NAMES)}
_ASCII_NAMES["SP"] = " "
_ASCII_NAMES["DEL"] = "\x7f"

_JSON_TYPE_NAMES = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


class HaskellShowError(ValueError):
    """Text that is not a valid Haskell `show` value (the message says what and where)."""


def parse_value(text: str) -> Scalar:
    """Decode one Haskell `show` text (a JSON string's content); see the module docstring."""
    first = text[:1]
    if first == '"':
        body = text[1:-1]
        # Fast path, the common case: a quoted string without escapes.
        if "\\" not in body and '"' not in body and len(text) > 1 and text[-1] == '"':
            return body
        return parse_string(text)
    if first in _NUMBER_STARTS:
        return _parse_number_or_text(text)
    if text == SQL_NULL:
        return None
    return text


def decode_json_value(value: object) -> Scalar | list[Scalar]:
    """Decode a V as parsed from JSON: a string, or an array of strings."""
    if isinstance(value, str):
        return parse_value(value)
    if isinstance(value, list):
        items: list[Scalar] = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise HaskellShowError(
                    f"array element {index} is {json_type_name(item)}, expected a string"
                )
            items.append(parse_value(item))
        return items
    raise HaskellShowError(
        f"value is {json_type_name(value)}, expected a string or an array of strings"
    )


def json_type_name(value: object) -> str:
    """The JSON type of a parsed JSON value with its article, for error messages."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _parse_number_or_text(text: str) -> Scalar:
    if text.isdigit():
        # isdigit also accepts non-ASCII digits, which Haskell never shows.
        return _integer(text) if text.isascii() else text
    # String methods settle the common forms, cheaper than a regex match.
    if text[4:5] == "-" and text[3:4] not in ("e", "E"):
        # A date or timestamp (`2024-06-01 ...`): in a number a `-` comes
        # only first or right after the exponent's `e`.
        return text
    whole, dot, fraction = (text[1:] if text[0] == "-" else text).partition(".")
    if whole.isdigit() and whole.isascii():
        if not dot:
            return _integer(text)  # negative
        if fraction.isdigit() and fraction.isascii():
            return decimal.Decimal(text)  # a fraction without exponent: exact as written
    if _EXPONENT_NUMBER.fullmatch(text) is None:
        return text  # a time, or other text: PostgreSQL casts it
    try:
        number = decimal.Decimal(text)
    except decimal.InvalidOperation:
        return text  # an exponent beyond Decimal's range: see the module docstring
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and 0 < exponent <= _MAX_EXPANDED_EXPONENT:
        # PostgreSQL reads 1.5e7 with scale 0, i.e. 15000000, not 1.5E+7.
        number = decimal.Decimal(format(number, "f"))
    return number


def _integer(text: str) -> int | decimal.Decimal:
    try:
        return int(text)
    except ValueError:
        # Beyond Python's int-from-text digit limit: Decimal has none.
        return decimal.Decimal(text)


def parse_string(text: str) -> str:
    """Decode a quoted Haskell string literal, quotes included, e.g. `"a\\"b"`.

    Error offsets count from the opening quote.
    """
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise HaskellShowError("quoted string lacks its closing quote")
    body = text[1:-1]
    if "\\" not in body:
        # The common case: no escapes, so the body is the value.
        if '"' in body:
            raise HaskellShowError(f'unescaped " at offset {body.index(chr(34)) + 1}')
        return body
    if _NOT_A_JSON_ESCAPE.search(body) is None:
        # Only escapes that mean the same in JSON (a JSON column's \"): the
        # literal is a JSON string, and orjson decodes it at C speed.
        try:
            value: str = orjson.loads(text)
        except ValueError:
            pass  # an unescaped quote, a raw control character: the full decoder says which
        else:
            return value
    return _unescape(text, len(text) - 1)


def _unescape(text: str, end: int) -> str:
    """Decode text[1:end] (the body between the quotes) chunk by chunk."""
    parts: list[str] = []
    pos = 1
    while True:
        slash = text.find("\\", pos, end)
        chunk_end = end if slash < 0 else slash
        quote = text.find('"', pos, chunk_end)
        if quote >= 0:
            raise HaskellShowError(f'unescaped " at offset {quote}')
        parts.append(text[pos:chunk_end])
        if slash < 0:
            return "".join(parts)
        if slash + 1 == end:
            raise HaskellShowError("backslash at the end of a quoted string")
        decoded, pos = _escape(text, slash + 1, end)
        parts.append(decoded)


def _escape(text: str, start: int, end: int) -> tuple[str, int]:
    """Decode the escape whose first character (after the backslash) is at `start`.

    Returns the decoded text and the position after the escape.
    """
    char = text[start]
    simple = _SINGLE_CHAR_ESCAPES.get(char)
    if simple is not None:
        return simple, start + 1
    at = start - 1  # the backslash, for messages
    if char == "&":
        return "", start + 1
    if "0" <= char <= "9":
        return _code_point(text, start, end, _DECIMAL_DIGITS, 10, at=at)
    if char == "x":
        return _code_point(text, start + 1, end, _HEX_DIGITS, 16, at=at)
    if char == "o":
        return _code_point(text, start + 1, end, _OCTAL_DIGITS, 8, at=at)
    if char == "^":
        control = text[start + 1 : min(start + 2, end)]
        if control and "@" <= control <= "_":
            return chr(ord(control) - 64), start + 2
        raise HaskellShowError(f"invalid control escape \\^{control} at offset {at}")
    if "A" <= char <= "Z":
        # Longest name first: "\\SOH" is SOH, never SO followed by "H".
        for size in (3, 2):
            name = text[start : min(start + size, end)]
            if name in _ASCII_NAMES:
                return _ASCII_NAMES[name], start + len(name)
    if char.isspace():
        gap_end = start
        while gap_end < end and text[gap_end].isspace():
            gap_end += 1
        if gap_end < end and text[gap_end] == "\\":
            return "", gap_end + 1
        raise HaskellShowError(f"unterminated string gap at offset {at}")
    raise HaskellShowError(f"invalid escape \\{char} at offset {at}")


def _code_point(
    text: str, start: int, end: int, digits: re.Pattern[str], base: int, *, at: int
) -> tuple[str, int]:
    match = digits.match(text, start, end)
    if match is None:
        raise HaskellShowError(f"numeric escape without digits at offset {at}")
    # Leading zeros are legal; past them, 8 digits exceed U+10FFFF in every
    # base used here, and the check keeps int() off huge digit strings.
    significant = match.group().lstrip("0")
    if len(significant) > 7 or int(significant or "0", base) > _MAX_CODE_POINT:
        raise HaskellShowError(f"escape at offset {at} exceeds U+10FFFF")
    return chr(int(significant or "0", base)), match.end()
