"""The euler_kv entry decoder against the spec (shared/spec/euler-kv-format.md)."""

from __future__ import annotations

import copy
import decimal
import tracemalloc
from typing import Any, cast

import orjson
import pytest
import zstandard

from tap_redis_stream.entries import EntryParseError, Operation, euler_kv
from tap_redis_stream.entries.euler_kv import ZSTD_MAGIC, EulerKvDecoder, quiet_snake
from tests import kv_workload

STREAM_KEY = "rider-db-sync-stream{shard-5}"
BOOKING_ID = "9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3"

# The spec's section 3 examples, verbatim but for two line breaks moved.
SPEC_CREATE = rb"""{"contents_v2":{"cmdVersion":"V2","command":{"contents":{
 "additionalInfo":"SqlNull","bookingId":"\"9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3\"",
 "createdAt":"2024-06-01 10:15:30.123456 UTC","distanceUnit":"\"Meter\"",
 "driverDistToPickup":"850","driverDistToPickupValue":"850.0",
 "reasonCode":"\"DRIVER_NOT_MOVING\"","rideId":"SqlNull","source":"\"ByUser\""},
 "tag":"BookingCancellationReasonObject"},"dbName":"postgres",
 "tag":"bookingCancellationReason_bookingId_9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3{shard-5}",
 "timestamp":1717236930123},
 "forceDrainToDB":false,"mappings":{},
 "modelObject":{"bookingId":"9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3","driverDistToPickup":850,"source":"ByUser"},
 "tag":"Create"}"""

SPEC_UPDATE = rb"""{"contents_v2":{"cmdVersion":"V2","command":{"contents":[
  [{"key":"isBookingUpdated","value":"True"},
   {"key":"updatedAt","value":"2024-06-01 10:20:00.5 UTC"}],
  [{"clauseTag":"where","clauseContents":{"$and":[
     {"id":"\"9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3\""},
     {"$and":[{"id":"\"9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3\""}]}]}}]],
  "tag":"BookingOptions"},"dbName":"postgres",
  "tag":"booking_id_9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3{shard-73}","timestamp":1717237200500},
 "forceDrainToDB":false,"mappings":{"bppBookingId":"bpp_ride_booking_id"},
 "tag":"Update","updatedModel":{"id":"9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3","isBookingUpdated":true}}"""

SPEC_DELETE = rb"""{"contents_v2":{"cmdVersion":"V2","command":{"contents":{
   "clauseTag":"where","clauseContents":{"$and":[
   {"$and":[{"riderId":"\"0b7c6d2e-1f4a-4e3b-9d8c-5a6b7c8d9e0f\""},{"tag":"\"Home\""}]},
   {"$and":[{"id":"\"5b2e9d14-3c6a-4f0b-9e21-7a8c0d4f6e19\""}]}]}},
  "tag":"SavedLocationOptions"},"dbName":"postgres",
  "tag":"savedReqLocation_id_5b2e9d14-3c6a-4f0b-9e21-7a8c0d4f6e19{shard-3}","timestamp":1717237500000},
 "mappings":{},"tag":"Delete"}"""

SPEC_CREATE_OP = Operation(
    table="booking_cancellation_reason",
    kind="insert",
    row={
        "additional_info": None,
        "booking_id": BOOKING_ID,
        "created_at": "2024-06-01 10:15:30.123456 UTC",
        "distance_unit": "Meter",
        "driver_dist_to_pickup": 850,
        "driver_dist_to_pickup_value": decimal.Decimal("850.0"),
        "reason_code": "DRIVER_NOT_MOVING",
        "ride_id": None,
        "source": "ByUser",
    },
    where=None,
    force_drain=False,
)

SPEC_UPDATE_OP = Operation(
    table="booking",
    kind="update",
    row={"is_booking_updated": "True", "updated_at": "2024-06-01 10:20:00.5 UTC"},
    where={
        "and": [
            {"column": "id", "op": "=", "value": BOOKING_ID},
            {"and": [{"column": "id", "op": "=", "value": BOOKING_ID}]},
        ]
    },
    force_drain=False,
    model={"id": BOOKING_ID, "is_booking_updated": True},  # updatedModel, keys mapped
)

SPEC_DELETE_OP = Operation(
    table="saved_location",
    kind="delete",
    row={},
    where={
        "and": [
            {
                "and": [
                    {
                        "column": "rider_id",
                        "op": "=",
                        "value": "0b7c6d2e-1f4a-4e3b-9d8c-5a6b7c8d9e0f",
                    },
                    {"column": "tag", "op": "=", "value": "Home"},
                ]
            },
            {"and": [{"column": "id", "op": "=", "value": "5b2e9d14-3c6a-4f0b-9e21-7a8c0d4f6e19"}]},
        ]
    },
    force_drain=False,
)

SPEC_EXAMPLES = [
    pytest.param(SPEC_CREATE, SPEC_CREATE_OP, id="create"),
    pytest.param(SPEC_UPDATE, SPEC_UPDATE_OP, id="update"),
    pytest.param(SPEC_DELETE, SPEC_DELETE_OP, id="delete"),
]


def decode(raw: bytes, decoder: EulerKvDecoder | None = None) -> Operation:
    return (decoder or EulerKvDecoder()).decode(STREAM_KEY, {b"command": raw})


def envelope(tag: str, model_tag: str, contents: Any, **top: Any) -> dict[str, Any]:
    """A minimal valid envelope around a command."""
    doc: dict[str, Any] = {
        "contents_v2": {
            "cmdVersion": "V2",
            "command": {"contents": contents, "tag": model_tag},
            "dbName": "postgres",
            "tag": "x_id_1{shard-0}",
            "timestamp": 1717236930123,
        },
        "mappings": {},
        "tag": tag,
    }
    doc.update(top)
    return doc


def create(contents: dict[str, Any], model: str = "FareV2", **top: Any) -> bytes:
    return orjson.dumps(envelope("Create", f"{model}Object", contents, **top))


def update(sets: list[Any], where: Any, model: str = "Booking", **top: Any) -> bytes:
    contents = [sets, [{"clauseTag": "where", "clauseContents": where}]]
    return orjson.dumps(envelope("Update", f"{model}Options", contents, **top))


def delete(where: Any, model: str = "Booking", **top: Any) -> bytes:
    contents = {"clauseTag": "where", "clauseContents": where}
    return orjson.dumps(envelope("Delete", f"{model}Options", contents, **top))


def decode_where(where: Any, mappings: dict[str, str] | None = None) -> Any:
    return decode(delete(where, mappings=mappings or {})).where


def parse_error(raw: bytes, decoder: EulerKvDecoder | None = None) -> str:
    with pytest.raises(EntryParseError) as caught:
        decode(raw, decoder)
    message = str(caught.value)
    assert STREAM_KEY not in message  # the tap adds the stream key and entry ID
    return message


# --- the spec's examples -----------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), SPEC_EXAMPLES)
def test_spec_examples(raw: bytes, expected: Operation) -> None:
    assert decode(raw) == expected


def test_spec_create_keeps_numeric_scale() -> None:
    row = decode(SPEC_CREATE).row
    assert type(row["driver_dist_to_pickup"]) is int
    assert str(row["driver_dist_to_pickup_value"]) == "850.0"
    assert list(row) == sorted(row)  # entry order kept (the example is sorted)


@pytest.mark.parametrize(("raw", "expected"), SPEC_EXAMPLES)
@pytest.mark.parametrize("content_size", [True, False])
def test_spec_examples_zstd_compressed(raw: bytes, expected: Operation, content_size: bool) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=content_size).compress(raw)
    assert frame[:4] == ZSTD_MAGIC
    assert (zstandard.frame_content_size(frame) == len(raw)) is content_size
    assert decode(frame) == expected


@pytest.mark.parametrize("content_size", [True, False])
def test_zstd_streamed_frame_round_trip(content_size: bool) -> None:
    raw = create({f"field{i}": f'"{"x" * i}"' for i in range(200)})
    compressor = zstandard.ZstdCompressor(write_content_size=content_size)
    chunker = compressor.chunker(size=len(raw) if content_size else -1, chunk_size=64)
    frame = b"".join([*chunker.compress(raw), *chunker.finish()])
    assert decode(frame).row["field199"] == "x" * 199


# --- the workload generator's entries (an independent encoder) ---------------


def expected_value(value: Any) -> Any:
    """What the decoder should give for a kv_workload ground-truth value."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    if isinstance(value, kv_workload.Ts):
        return value.show()
    if isinstance(value, kv_workload.Raw):
        return value.text
    if isinstance(value, kv_workload.JsonText):
        return value.text()
    if isinstance(value, list):
        return [expected_value(v) for v in value]
    return value


@pytest.mark.parametrize("compress", [False, True])
def test_workload_creates_decode_to_their_ground_truth(compress: bool) -> None:
    decoder = EulerKvDecoder()
    seen_compressed = 0
    for entry in kv_workload.creates(300, compress=compress, force_every=7):
        seen_compressed += entry.payload[:4] == ZSTD_MAGIC
        operation = decoder.decode(entry.stream_key, {b"command": entry.payload})
        assert operation.table == entry.table.name
        assert operation.kind == "insert"
        assert operation.force_drain is entry.force_drain
        assert operation.row == {k: expected_value(v) for k, v in entry.row.items()}
    assert (seen_compressed > 0) is compress


def _outcome(decode_raw: Any, raw: bytes) -> Any:
    try:
        return decode_raw(raw)
    except EntryParseError as exc:
        return f"error: {exc}"


def test_workload_creates_take_the_fast_path() -> None:
    decoder = EulerKvDecoder()
    for entry in kv_workload.creates(200, compress=False, force_every=5):
        create = euler_kv._CREATE.decode(entry.payload)
        assert isinstance(create, euler_kv._Create)
        assert decoder._fast_create(create) is not None


def test_fast_path_ignores_model_object_numbers_beyond_a_double() -> None:
    # The one documented difference: the general path's JSON parser refuses 1e400.
    raw = SPEC_CREATE.replace(b'"modelObject":{', b'"modelObject":{"far":1e400,')
    assert decode(raw) == SPEC_CREATE_OP
    assert "not valid JSON" in _outcome(EulerKvDecoder()._decode_general, raw)


def _differential_corpus() -> list[bytes]:
    corpus = [entry.payload for entry in kv_workload.creates(300, compress=False, force_every=3)]
    corpus += [cast(bytes, param.values[0]) for param in SPEC_EXAMPLES + POISON]
    fields = {"fooBar": '"a"', "baz": "7", "when": "2024-06-01", "tags": ['"x"', "SqlNull"]}
    corpus += [
        create(fields, mappings={"fooBar": "renamed"}),
        create(fields, mappings={"fooBar": "baz"}),  # two fields, one column
        create(fields, mappings={"fooBar": ""}),
        create({"a_b": '"1"', "aB": '"2"'}),  # both snake_case to a_b
        create({"-": '"1"'}),  # names no column
        create(fields, model="Fare"),  # no Object suffix
        create(fields, model=""),
        create({"bad": '"unterminated'}),
        create({"bad": '"esc\\q"'}),
        create({"bad": '"caf\\233 \\SOH\\&5 \\1114112"'}),
        create({"bad": 5}),
        create({"bad": ['"a"', 1]}),
        create(fields, forceDrainToDB=None),
        create(fields, forceDrainToDB=True, modelObject={"id": 1}),
        b'{"tag":"Create","contents_v2":{"cmdVersion":"V2","command":{"tag":"AObject",'
        b'"contents":{"a":"1","a":"2"}},"dbName":"p","tag":"t","timestamp":1},"mappings":{}}',
    ]
    return corpus


def test_fast_path_decides_as_the_general_path() -> None:
    """Whatever the msgspec fast path accepts, the general path decodes the same way;
    what it declines gets the general path's error."""
    fast = EulerKvDecoder()
    other = EulerKvDecoder()

    def general(raw: bytes) -> Operation:
        return other._decode_general(other._decompress(raw) if raw[:4] == ZSTD_MAGIC else raw)

    corpus = _differential_corpus()
    for raw in corpus + corpus:  # twice: the second pass uses the cached column shapes
        assert _outcome(fast.decode_command, raw) == _outcome(general, raw), raw


# --- names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("FareV2", "fare_v2"),
        ("BookingCancellationReason", "booking_cancellation_reason"),
        ("HTTPServer", "http_server"),
        ("ABC", "abc"),
        ("A", "a"),
        ("a", "a"),
        ("bookingId", "booking_id"),
        ("bppRideBookingID", "bpp_ride_booking_id"),
        ("getHTTPResponse", "get_http_response"),
        ("v2Name", "v2_name"),
        ("A1B", "a1_b"),
        ("fare2V", "fare2_v"),
        ("already_snake", "already_snake"),
        ("kebab-case-name", "kebab_case_name"),
        ("two words", "two_words"),
        ("_id", "id"),
        ("trailing_", "trailing"),
        ("double__under", "double_under"),
        ("ID_Card", "i_d_card"),  # casing's quirk: a capital run's last letter starts a word
        ("", ""),
    ],
)
def test_quiet_snake(name: str, expected: str) -> None:
    assert quiet_snake(name) == expected


@pytest.mark.parametrize(
    ("model", "table"),
    [
        ("FareV2", "fare_v2"),
        ("PersonFlowStatus", "person_flow_status"),
        ("HTTPServer", "http_server"),
        ("ABC", "abc"),
    ],
)
def test_table_name_from_model_tag(model: str, table: str) -> None:
    assert decode(create({"id": '"1"'}, model=model)).table == table
    assert decode(delete({"id": '"1"'}, model=model)).table == table


def test_mappings_rename_columns_everywhere() -> None:
    mappings = {"bppBookingId": "bpp_ride_booking_id", "id": "booking_pk"}
    raw = create({"bppBookingId": '"b"', "id": '"1"', "riderId": '"r"'}, mappings=mappings)
    assert decode(raw).row == {"bpp_ride_booking_id": "b", "booking_pk": "1", "rider_id": "r"}
    raw = update([{"key": "bppBookingId", "value": '"c"'}], {"id": '"1"'}, mappings=mappings)
    operation = decode(raw)
    assert operation.row == {"bpp_ride_booking_id": "c"}
    assert operation.where == {"column": "booking_pk", "op": "=", "value": "1"}


def test_mappings_absent_is_empty() -> None:
    doc = envelope("Create", "FareV2Object", {"fooBar": "1"})
    del doc["mappings"]
    assert decode(orjson.dumps(doc)).row == {"foo_bar": 1}


# --- values and flags --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SqlNull", None),
        ('"text"', "text"),
        ('"caf\\233 \\8364\\&5"', "caf\u00e9 \u20ac5"),
        ('"{\\"a\\":[1,2]}"', '{"a":[1,2]}'),
        ("850", 850),
        ("-12", -12),
        ("850.0", decimal.Decimal("850.0")),
        ("1.0e-2", decimal.Decimal("0.010")),
        ("True", "True"),
        ("False", "False"),
        ("2024-06-01 10:15:30.123456 UTC", "2024-06-01 10:15:30.123456 UTC"),
        ("2024-06-01", "2024-06-01"),
        (['"a"', '"b"'], ["a", "b"]),
        (["1", "SqlNull"], [1, None]),
        ([], []),
    ],
)
def test_value_forms(value: Any, expected: Any) -> None:
    assert decode(create({"v": value})).row == {"v": expected}
    assert decode(update([{"key": "v", "value": value}], {"id": '"1"'})).row == {"v": expected}


@pytest.mark.parametrize("flag", [True, False])
def test_force_drain(flag: bool) -> None:
    assert decode(create({"id": '"1"'}, forceDrainToDB=flag)).force_drain is flag
    assert (
        decode(update([{"key": "a", "value": "1"}], {"id": '"1"'}, forceDrainToDB=flag)).force_drain
        is flag
    )


def test_force_drain_absent_is_false() -> None:
    assert decode(create({"id": '"1"'})).force_drain is False
    assert decode(delete({"id": '"1"'})).force_drain is False


# --- where clauses -----------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"id": '"1"'}, {"column": "id", "op": "=", "value": "1"}),
        ({"riderId": "7"}, {"column": "rider_id", "op": "=", "value": 7}),
        ({"id": "SqlNull"}, {"column": "id", "op": "=", "value": None}),
        ({"tags": ['"a"', '"b"']}, {"column": "tags", "op": "=", "value": ["a", "b"]}),
        ({"n": {"$ne": "5"}}, {"column": "n", "op": "!=", "value": 5}),
        ({"n": {"$gt": "5"}}, {"column": "n", "op": ">", "value": 5}),
        ({"n": {"$gte": "5.5"}}, {"column": "n", "op": ">=", "value": decimal.Decimal("5.5")}),
        ({"at": {"$lt": "2024-06-01"}}, {"column": "at", "op": "<", "value": "2024-06-01"}),
        ({"n": {"$lte": "SqlNull"}}, {"column": "n", "op": "<=", "value": None}),
        (
            {"id": {"$in": ['"1"', '"2"', "SqlNull"]}},
            {"column": "id", "op": "in", "value": ["1", "2", None]},
        ),
        ({"id": {"$in": []}}, {"column": "id", "op": "in", "value": []}),
        ({"id": {"$notIn": ['"1"']}}, {"column": "id", "op": "not_in", "value": ["1"]}),
        ({"id": {"$notIn": []}}, {"column": "id", "op": "not_in", "value": []}),
        ({"$not": {"id": '"1"'}}, {"not": {"column": "id", "op": "=", "value": "1"}}),
        ({"id": {"$not": '"1"'}}, {"not": {"column": "id", "op": "=", "value": "1"}}),
        (
            {"id": {"$not": {"$in": ['"1"']}}},
            {"not": {"column": "id", "op": "in", "value": ["1"]}},
        ),
        (
            {"$or": [{"a": "1"}, {"bC": "2"}]},
            {
                "or": [
                    {"column": "a", "op": "=", "value": 1},
                    {"column": "b_c", "op": "=", "value": 2},
                ]
            },
        ),
        (
            {"$and": [{"$or": [{"a": "1"}]}, {"$not": {"$and": [{"b": {"$gt": "2"}}]}}]},
            {
                "and": [
                    {"or": [{"column": "a", "op": "=", "value": 1}]},
                    {"not": {"and": [{"column": "b", "op": ">", "value": 2}]}},
                ]
            },
        ),
    ],
)
def test_where_forms(where: Any, expected: Any) -> None:
    assert decode_where(where) == expected


def test_where_is_json_serialisable() -> None:
    where = decode_where({"$and": [{"id": {"$in": ['"1"', "2.5"]}}, {"n": "SqlNull"}]})
    assert orjson.loads(orjson.dumps(where, default=str)) == {
        "and": [
            {"column": "id", "op": "in", "value": ["1", "2.5"]},
            {"column": "n", "op": "=", "value": None},
        ]
    }


# --- the entry's fields ------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {b"cmd": SPEC_CREATE},
        {b"command": SPEC_CREATE, b"extra": b"1"},
    ],
)
def test_exactly_one_command_field(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(EntryParseError) as caught:
        EulerKvDecoder().decode(STREAM_KEY, fields)
    assert "expected exactly one field 'command'" in str(caught.value)
    assert f"found {len(fields)}" in str(caught.value)


# --- the poison corpus ------------------------------------------------------


def spec_create_with(change: Any) -> bytes:
    doc = orjson.loads(SPEC_CREATE)
    change(doc)
    return orjson.dumps(doc)


def _set(path: list[str], value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value

    return change


def _drop(path: list[str]) -> Any:
    def change(doc: dict[str, Any]) -> None:
        for key in path[:-1]:
            doc = doc[key]
        del doc[path[-1]]

    return change


CONTENTS = ["contents_v2", "command", "contents"]
GOOD_FRAME = zstandard.ZstdCompressor().compress(SPEC_CREATE)

POISON = [
    # Not JSON, not an object.
    pytest.param(b"", "command is not valid JSON", id="empty"),
    pytest.param(b"{not json", "command is not valid JSON", id="non-json"),
    pytest.param(b"\xff\xfe{}", "command is not valid JSON", id="non-utf8"),
    pytest.param(SPEC_CREATE[:-1], "command is not valid JSON", id="cut-json"),
    pytest.param(b"[1, 2]", "command is an array, expected an object", id="json-array"),
    pytest.param(b'"Create"', "command is a string, expected an object", id="json-string"),
    pytest.param(b"null", "command is null, expected an object", id="json-null"),
    # zstd.
    pytest.param(ZSTD_MAGIC + b"garbage!", "does not decompress", id="zstd-garbage"),
    pytest.param(ZSTD_MAGIC, "does not decompress", id="zstd-magic-only"),
    pytest.param(GOOD_FRAME[:-4], "truncated", id="zstd-truncated"),
    pytest.param(GOOD_FRAME[: len(GOOD_FRAME) // 2], "zstd", id="zstd-half"),
    pytest.param(GOOD_FRAME + b"junk", "4 bytes after its frame", id="zstd-trailing"),
    pytest.param(GOOD_FRAME + GOOD_FRAME, "bytes after its frame", id="zstd-two-frames"),
    pytest.param(
        zstandard.ZstdCompressor().compress(b"not json"),
        "command is not valid JSON",
        id="zstd-non-json",
    ),
    # Envelope.
    pytest.param(
        spec_create_with(_set(["tag"], "Upsert")), "envelope tag 'Upsert' is not", id="unknown-tag"
    ),
    pytest.param(
        spec_create_with(_set(["tag"], "create")), "envelope tag 'create'", id="lowercase-tag"
    ),
    pytest.param(spec_create_with(_drop(["tag"])), "envelope tag None", id="missing-tag"),
    pytest.param(
        spec_create_with(_drop(["contents_v2"])), "envelope lacks contents_v2", id="no-contents_v2"
    ),
    pytest.param(
        spec_create_with(_set(["contents_v2"], "x")),
        "contents_v2 is a string, expected an object",
        id="contents_v2-string",
    ),
    *[
        pytest.param(
            spec_create_with(_drop(["contents_v2", name])),
            f"contents_v2 lacks {name}",
            id=f"no-{name}",
        )
        for name in ("cmdVersion", "tag", "timestamp", "dbName", "command")
    ],
    pytest.param(
        spec_create_with(_set(["contents_v2", "command"], [])),
        "contents_v2.command is an array",
        id="command-array",
    ),
    pytest.param(
        spec_create_with(_drop(["contents_v2", "command", "tag"])),
        "contents_v2.command lacks tag",
        id="no-command-tag",
    ),
    pytest.param(
        spec_create_with(_drop(CONTENTS)), "contents_v2.command lacks contents", id="no-contents"
    ),
    pytest.param(
        spec_create_with(_set(["mappings"], [])),
        "mappings is an array, expected an object",
        id="mappings-array",
    ),
    pytest.param(
        spec_create_with(_set(["mappings"], None)), "mappings is null", id="mappings-null"
    ),
    pytest.param(
        spec_create_with(_set(["mappings"], {"a": 1})),
        "mappings['a'] is a number",
        id="mapping-number",
    ),
    pytest.param(
        spec_create_with(_set(["mappings"], {"a": ""})),
        "mappings['a'] is an empty string",
        id="mapping-empty",
    ),
    pytest.param(
        spec_create_with(_set(["forceDrainToDB"], "true")),
        "forceDrainToDB is a string, expected a boolean",
        id="force-string",
    ),
    pytest.param(
        spec_create_with(_set(["forceDrainToDB"], None)), "forceDrainToDB is null", id="force-null"
    ),
    pytest.param(
        spec_create_with(_set(["forceDrainToDB"], 1)),
        "forceDrainToDB is a number",
        id="force-number",
    ),
    # Model tag.
    pytest.param(
        spec_create_with(_set(["contents_v2", "command", "tag"], "BookingOptions")),
        "contents_v2.command.tag 'BookingOptions' must end in 'Object' for Create",
        id="create-with-options",
    ),
    pytest.param(
        spec_create_with(_set(["contents_v2", "command", "tag"], "Object")),
        "'Object' names no table",
        id="tag-only-suffix",
    ),
    pytest.param(
        spec_create_with(_set(["contents_v2", "command", "tag"], 5)),
        "contents_v2.command.tag 5",
        id="tag-number",
    ),
    pytest.param(
        orjson.dumps(envelope("Update", "BookingObject", [[], []])),
        "must end in 'Options' for Update",
        id="update-with-object",
    ),
    pytest.param(
        orjson.dumps(envelope("Delete", "Booking", {})),
        "'Booking' must end in 'Options' for Delete",
        id="delete-without-suffix",
    ),
    # Create values.
    pytest.param(
        create({"bookingId": 850}),
        "Create contents field 'bookingId': value is a number, "
        "expected a string or an array of strings",
        id="value-number",
    ),
    pytest.param(create({"rate": 8.5}), "field 'rate': value is a number", id="value-float"),
    pytest.param(
        create({"isActive": True}), "field 'isActive': value is a boolean", id="value-bool"
    ),
    pytest.param(create({"rideId": None}), "field 'rideId': value is null", id="value-null"),
    pytest.param(
        create({"breakup": {"base": "1"}}), "field 'breakup': value is an object", id="value-object"
    ),
    pytest.param(
        create({"tags": ['"a"', 2]}), "field 'tags': array element 1 is a number", id="array-number"
    ),
    pytest.param(
        create({"tags": [['"a"']]}), "field 'tags': array element 0 is an array", id="array-nested"
    ),
    pytest.param(
        create({"note": '"bad \\q escape"'}),
        "field 'note': invalid escape \\q at offset 5",
        id="bad-escape",
    ),
    pytest.param(
        create({"note": '"open'}),
        "field 'note': quoted string lacks its closing quote",
        id="open-quote",
    ),
    pytest.param(create({"note": '"a"b"'}), "field 'note': unescaped \"", id="stray-quote"),
    pytest.param(
        create({"note": '"\\1114112"'}),
        "field 'note': escape at offset 1 exceeds U+10FFFF",
        id="big-code-point",
    ),
    pytest.param(
        create({}), "Create contents_v2.command.contents has no fields", id="create-empty"
    ),
    pytest.param(
        orjson.dumps(envelope("Create", "FareV2Object", [])),
        "Create contents_v2.command.contents is an array",
        id="create-array",
    ),
    pytest.param(
        create({"fooBar": "1", "foo_bar": "2"}),
        "Create contents: fields 'fooBar' and 'foo_bar' both map to column 'foo_bar'",
        id="column-collision",
    ),
    pytest.param(
        create({"a": "1", "b": "2"}, mappings={"b": "a"}),
        "fields 'a' and 'b' both map to column 'a'",
        id="mapping-collision",
    ),
    pytest.param(
        create({"_": "1"}), "Create contents: field '_' names no column", id="no-column-name"
    ),
    # Update shape.
    pytest.param(
        orjson.dumps(envelope("Update", "BookingOptions", {"a": "1"})),
        "Update contents_v2.command.contents must be",
        id="update-object",
    ),
    pytest.param(
        orjson.dumps(envelope("Update", "BookingOptions", [[{"key": "a", "value": "1"}]])),
        "must be [[{key, value}",
        id="update-one-part",
    ),
    pytest.param(
        update([], {"id": '"1"'}),
        "Update contents[0] must be a non-empty array",
        id="update-no-sets",
    ),
    pytest.param(
        update([{"value": "1"}], {"id": '"1"'}),
        "Update contents[0][0] must be an object {key, value}",
        id="set-no-key",
    ),
    pytest.param(
        update([{"key": "a", "value": "1"}, {"key": "b"}], {"id": '"1"'}),
        "Update contents[0][1]",
        id="set-no-value",
    ),
    pytest.param(
        update([{"key": "a", "value": 1}], {"id": '"1"'}),
        "Update set field 'a': value is a number",
        id="set-number",
    ),
    pytest.param(
        update([{"key": "a", "value": "1"}, {"key": "a", "value": "2"}], {"id": '"1"'}),
        "Update set: fields 'a' and 'a' both map to column 'a'",
        id="set-twice",
    ),
    pytest.param(
        orjson.dumps(envelope("Update", "BookingOptions", [[{"key": "a", "value": "1"}], []])),
        "Update contents[1] must be an array of exactly one where clause",
        id="update-no-where",
    ),
    pytest.param(
        orjson.dumps(
            envelope(
                "Update",
                "BookingOptions",
                [
                    [{"key": "a", "value": "1"}],
                    [{"clauseTag": "where", "clauseContents": {"id": "1"}}] * 2,
                ],
            )
        ),
        "exactly one where clause",
        id="update-two-wheres",
    ),
    pytest.param(
        orjson.dumps(
            envelope(
                "Update",
                "BookingOptions",
                [[{"key": "a", "value": "1"}], [{"clauseTag": "set", "clauseContents": {}}]],
            )
        ),
        "Update where clause must be an object with clauseTag 'where'",
        id="update-clause-tag",
    ),
    # Where clauses.
    pytest.param(
        delete(None),
        "Delete where: expected an object with exactly one key, got null",
        id="where-null",
    ),
    pytest.param(
        delete({}),
        "Delete where: expected an object with exactly one key, got 0 keys",
        id="where-empty",
    ),
    pytest.param(
        delete({"a": '"1"', "b": '"2"'}),
        "Delete where: expected an object with exactly one key, got 2 keys",
        id="where-two-keys",
    ),
    pytest.param(delete([{"id": '"1"'}]), "got an array", id="where-array"),
    pytest.param(
        delete({"$and": [{"id": '"1"'}, None]}),
        "Delete where.$and[1]: expected an object with exactly one key, got null",
        id="and-null",
    ),
    pytest.param(
        delete({"$or": [{}]}), "Delete where.$or[0]: expected an object", id="or-empty-object"
    ),
    pytest.param(
        delete({"$and": []}),
        "Delete where.$and: expected a non-empty array of clauses",
        id="and-empty",
    ),
    pytest.param(
        delete({"$or": {"id": '"1"'}}),
        "Delete where.$or: expected a non-empty array",
        id="or-object",
    ),
    pytest.param(
        delete({"$not": None}),
        "Delete where.$not: expected an object with exactly one key, got null",
        id="not-null",
    ),
    pytest.param(
        delete({"$like": '"a%"'}), "Delete where: unknown operator '$like'", id="clause-unknown-op"
    ),
    pytest.param(
        delete({"name": {"$like": '"a%"'}}),
        "Delete where.name: unknown operator '$like'",
        id="term-unknown-op",
    ),
    pytest.param(delete({"n": {"$eq": "1"}}), "unknown operator '$eq'", id="term-eq-op"),
    pytest.param(
        delete({"n": {"$gt": "1", "$lt": "5"}}),
        "Delete where.n: expected an object with exactly one operator, got 2 keys",
        id="term-two-ops",
    ),
    pytest.param(
        delete({"n": {}}),
        "Delete where.n: expected an object with exactly one operator, got 0 keys",
        id="term-empty",
    ),
    pytest.param(delete({"n": None}), "Delete where.n: value is null", id="term-null"),
    pytest.param(delete({"n": 5}), "Delete where.n: value is a number", id="term-number"),
    pytest.param(delete({"n": True}), "Delete where.n: value is a boolean", id="term-bool"),
    pytest.param(
        delete({"n": {"$gt": 5}}), "Delete where.n.$gt: value is a number", id="gt-number"
    ),
    pytest.param(
        delete({"n": {"$in": '"1"'}}),
        "Delete where.n.$in: expected an array, got a string",
        id="in-string",
    ),
    pytest.param(
        delete({"n": {"$notIn": None}}),
        "Delete where.n.$notIn: expected an array, got null",
        id="notin-null",
    ),
    pytest.param(
        delete({"n": {"$in": ['"1"', 2]}}),
        "Delete where.n.$in: array element 1 is a number",
        id="in-number",
    ),
    pytest.param(
        delete({"n": '"bad\\q"'}), "Delete where.n: invalid escape \\q", id="where-bad-escape"
    ),
    pytest.param(
        delete({"_": '"1"'}), "Delete where: field '_' names no column", id="where-no-column"
    ),
    pytest.param(
        orjson.dumps(envelope("Delete", "BookingOptions", {"clauseTag": "where"})),
        "Delete where clause lacks clauseContents",
        id="no-clause-contents",
    ),
    pytest.param(
        orjson.dumps(envelope("Delete", "BookingOptions", [])),
        "Delete where clause must be an object",
        id="delete-array",
    ),
]


@pytest.mark.parametrize(("raw", "message"), POISON)
def test_poison_entries_fail_clearly(raw: bytes, message: str) -> None:
    assert message in parse_error(raw)


def test_parse_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        decode(b"nope")


def test_poison_corpus_leaves_the_spec_examples_intact() -> None:
    # The corpus builders copy the example; the module-level bytes stay valid.
    assert decode(copy.copy(SPEC_CREATE)) == SPEC_CREATE_OP


# --- decompression limits ----------------------------------------------------


@pytest.mark.parametrize("content_size", [True, False])
def test_decompressed_size_limit(content_size: bool) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=content_size).compress(SPEC_CREATE)
    exact = EulerKvDecoder(max_decompressed_bytes=len(SPEC_CREATE))
    assert decode(frame, exact) == SPEC_CREATE_OP
    small = EulerKvDecoder(max_decompressed_bytes=len(SPEC_CREATE) - 1)
    message = parse_error(frame, small)
    if content_size:
        assert f"zstd frame declares {len(SPEC_CREATE)} bytes" in message
    else:
        # Decompression stops past the limit: the full size is never known.
        assert "zstd frame decompresses to more than max_decompressed_bytes" in message
    assert f"max_decompressed_bytes={len(SPEC_CREATE) - 1}" in message


def test_decoder_rejects_a_non_positive_limit() -> None:
    with pytest.raises(ValueError, match="max_decompressed_bytes must be positive"):
        EulerKvDecoder(max_decompressed_bytes=0)


def test_plain_json_is_not_mistaken_for_zstd() -> None:
    # Only the exact magic switches to zstd; JSON starts with "{".
    assert decode(b" " + SPEC_DELETE) == SPEC_DELETE_OP


def test_updated_model_must_be_an_object():
    envelope = orjson.loads(SPEC_UPDATE)
    envelope["updatedModel"] = [1]
    with pytest.raises(EntryParseError, match="updatedModel"):
        EulerKvDecoder().decode_command(orjson.dumps(envelope))


def _unsized_bomb(megabytes: int) -> bytes:
    """A frame of `megabytes` MB of spaces that declares no content size (a few KB)."""
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    chunk = b" " * (1 << 20)
    return b"".join(compressor.compress(chunk) for _ in range(megabytes)) + compressor.flush()


def test_a_frame_without_a_size_is_not_decompressed_past_the_limit() -> None:
    # Before the bound, the whole 128 MB came out before the size was checked.
    frame = _unsized_bomb(128)
    assert zstandard.frame_content_size(frame) == -1
    assert len(frame) > 1024  # fed in pieces
    decoder = EulerKvDecoder(max_decompressed_bytes=1 << 20)
    tracemalloc.start()
    try:
        message = parse_error(frame, decoder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 << 20  # the limit, plus at most about 32 MB from one piece
    assert message == "zstd frame decompresses to more than max_decompressed_bytes=1048576 bytes"


def test_a_frame_that_lies_about_its_size_stops_at_the_declared_size() -> None:
    # zstd refuses to write past a declared size: one call stays bounded by it.
    frame = _unsized_bomb(64)
    descriptor = frame[4]
    assert descriptor == 0  # no content size, no checksum, no dictionary, window descriptor
    lying = frame[:4] + bytes([0x80]) + frame[5:6] + (1000).to_bytes(4, "little") + frame[6:]
    assert zstandard.frame_content_size(lying) == 1000
    tracemalloc.start()
    try:
        assert "does not decompress" in parse_error(lying)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def _unsized(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=False).compress(raw)


# An envelope whose frame is larger than one piece fed to a frame without a size.
BIG_CREATE = create({f"field{i}": f'"{i * 7919 % 10007:x}-{i}"' for i in range(400)})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(_unsized(SPEC_CREATE)[:-4], "truncated", id="small-truncated"),
        pytest.param(_unsized(SPEC_CREATE) + b"junk", "4 bytes after its frame", id="small-trail"),
        pytest.param(_unsized(BIG_CREATE)[:-4], "truncated", id="big-truncated"),
        pytest.param(_unsized(BIG_CREATE)[:1500], "truncated", id="big-cut"),
        pytest.param(_unsized(BIG_CREATE) + b"junk", "4 bytes after its frame", id="big-trail"),
        pytest.param(
            _unsized(BIG_CREATE) + b"j" * 3000, "3000 bytes after its frame", id="big-long-trail"
        ),
        pytest.param(
            _unsized(BIG_CREATE) + _unsized(BIG_CREATE),
            f"{len(_unsized(BIG_CREATE))} bytes after its frame",
            id="big-two-frames",
        ),
    ],
)
def test_frames_without_a_size_keep_their_errors(raw: bytes, message: str) -> None:
    assert len(_unsized(BIG_CREATE)) > 2 * 1024  # several pieces
    assert message in parse_error(raw)


def test_frames_without_a_size_decode_whole() -> None:
    assert decode(_unsized(BIG_CREATE)) == decode(BIG_CREATE)
    exact = EulerKvDecoder(max_decompressed_bytes=len(BIG_CREATE))
    assert decode(_unsized(BIG_CREATE), exact) == decode(BIG_CREATE)
    small = EulerKvDecoder(max_decompressed_bytes=len(BIG_CREATE) - 1)
    assert "decompresses to more than" in parse_error(_unsized(BIG_CREATE), small)


# --- UTF-8 in the parts the fast path skips -----------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(b'"modelObject":{"bookingId"', b'"modelObject":{"b\xffookingId"', id="key"),
        pytest.param(b'"source":"ByUser"}', b'"source":"By\xfeUser"}', id="model-value"),
        pytest.param(b'"source":"ByUser"}', b'"source":"\xc0\xaf"}', id="overlong"),
        pytest.param(b'"source":"ByUser"}', b'"source":"\xed\xa0\x80"}', id="surrogate"),
        pytest.param(b'"dbName":"postgres"', b'"dbName":"post\xffgres"', id="dbName"),
        pytest.param(b'"tag":"bookingCancellation', b'"tag":"\xffbookingCancellation', id="tag"),
        pytest.param(b'"distanceUnit"', b'"distance\x80Unit"', id="field-name"),
    ],
)
def test_invalid_utf8_anywhere_is_refused_by_both_paths(old: bytes, new: bytes) -> None:
    assert SPEC_CREATE.count(old) == 1
    raw = SPEC_CREATE.replace(old, new)
    message = parse_error(raw)
    assert message.startswith("command is not valid JSON")
    assert "UTF-8" in message
    assert _outcome(EulerKvDecoder()._decode_general, raw) == f"error: {message}"
    assert parse_error(zstandard.ZstdCompressor().compress(raw)) == message


def test_valid_utf8_outside_ascii_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = SPEC_CREATE.replace(b'"source":"ByUser"}', '"source":"Bÿ Üser ✓ 🚗"}'.encode())
    decoder = EulerKvDecoder()
    monkeypatch.setattr(decoder, "_decode_general", None)  # not called
    assert decode(raw, decoder) == SPEC_CREATE_OP
