"""Pure parts of the target: signatures, buckets, checkpoints, SQL builders, values, names."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import pytest

from target_batched_postgres.batcher import TableBatcher
from target_batched_postgres.checkpoint import Checkpointer
from target_batched_postgres.dead_letter import DeadLetter
from target_batched_postgres.errors import ConfigError, FatalError, TransientError
from target_batched_postgres.flush import TableRoute, build_kafka_message, build_kafka_messages
from target_batched_postgres.identifiers import fit_identifier, table_name_for_stream, topic_name
from target_batched_postgres.pgtypes import (
    BIGINT,
    JSONB,
    NUMERIC,
    TEXT,
    TIMESTAMPTZ,
    Kind,
    type_for_schema,
)
from target_batched_postgres.postgres_writer import (
    ConflictBackoff,
    Encoded,
    InsertPlan,
    TableSpec,
    _joined,
)
from target_batched_postgres.retry import RetryPolicy
from target_batched_postgres.settings import apply_env_switches
from target_batched_postgres.signature import ColumnSignature, data_columns
from target_batched_postgres.sql import OnConflict, build_create_table, build_insert
from target_batched_postgres.surrogates import NOT_UTF8, to_json_bytes_exact
from target_batched_postgres.values import ENCODERS


def test_signature_excludes_control_properties_and_sorts():
    record = {
        "b": 1,
        "a": 2,
        "_sdc_force_drain": True,
        "_sdc_source_stream": "s",
        "_sdc_extracted_at": "x",
    }
    assert data_columns(record) == ("_sdc_extracted_at", "a", "b")
    assert ColumnSignature.of("t", record) == ColumnSignature("t", ("_sdc_extracted_at", "a", "b"))


def test_alternating_signatures_fill_two_buckets():
    batcher = TableBatcher("t", batch_size=5)
    full = []
    for i in range(10):
        columns = ("a", "b") if i % 2 == 0 else ("a",)
        bucket = batcher.add(i, {"n": i}, columns)
        if bucket is not None:
            full.append(bucket)
    assert [(b.signature.columns, [p.seq for p in b.records]) for b in full] == [
        (("a", "b"), [0, 2, 4, 6, 8]),
        (("a",), [1, 3, 5, 7, 9]),
    ]
    assert batcher.pending_count == 0
    assert batcher.signatures_seen == {("a", "b"), ("a",)}


def test_aged_buckets_and_oldest_seq():
    now = [100.0]
    batcher = TableBatcher("t", batch_size=10, clock=lambda: now[0])
    batcher.add(0, {}, ("a",))
    now[0] = 105.0
    batcher.add(1, {}, ("b",))
    assert batcher.oldest_open_seq() == 0
    now[0] = 111.0
    aged = batcher.take_aged(10.0)
    assert [b.signature.columns for b in aged] == [("a",)]
    assert batcher.oldest_open_seq() == 1
    assert [b.signature.columns for b in batcher.take_all()] == [("b",)]
    assert batcher.oldest_open_seq() is None
    with pytest.raises(ValueError, match="batch_size"):
        TableBatcher("t", 0)


def test_checkpointer_emits_only_durable_states():
    checkpoints = Checkpointer()
    checkpoints.add(0, {"n": 0})
    assert checkpoints.take_emittable(None) == {"n": 0}
    checkpoints.add(3, {"n": 3})  # after records 0, 1, 2
    checkpoints.add(5, {"n": 5})
    assert checkpoints.take_emittable(2) is None  # record 2 still waits
    assert checkpoints.take_emittable(3) == {"n": 3}
    assert checkpoints.take_emittable(None) == {"n": 5}
    assert checkpoints.take_emittable(None) is None
    assert not checkpoints.mark_emitted({"n": 5})
    assert checkpoints.mark_emitted({"n": 6})


def test_insert_builder_is_one_statement_with_quoted_identifiers():
    statement = build_insert(
        "s",
        'we"ird',
        ["a", "select"],
        [BIGINT, JSONB],
        on_conflict=OnConflict.UPSERT,
        key_columns=["a"],
    )
    assert statement.as_string(None) == (
        'INSERT INTO "s"."we""ird" ("a", "select") SELECT CAST(x."a" AS "pg_catalog"."int8"), '
        'CAST(x."select" AS "pg_catalog"."jsonb") FROM json_to_recordset(%s::json)'
        ' AS x("a" text, "select" text)'
        ' ON CONFLICT ("a") DO UPDATE SET "select" = EXCLUDED."select"'
    )
    assert (
        build_insert("s", "t", ["a"], [TEXT], on_conflict=OnConflict.ERROR)
        .as_string(None)
        .endswith('AS x("a" text)')
    )
    only_key = build_insert(
        "s", "t", ["a"], [TEXT], on_conflict=OnConflict.UPSERT, key_columns=["a"]
    )
    assert only_key.as_string(None).endswith("ON CONFLICT DO NOTHING")
    assert build_insert("s", "t", [], []).as_string(None) == (
        'INSERT INTO "s"."t" SELECT FROM generate_series(1, %s) ON CONFLICT DO NOTHING'
    )


def test_create_table_builder():
    statement = build_create_table("s", "t", [("id", BIGINT), ("x; drop", TEXT)], ["id"])
    assert statement.as_string(None) == (
        'CREATE TABLE IF NOT EXISTS "s"."t" ("id" "pg_catalog"."int8", "x; drop" "pg_catalog"."text",'
        ' PRIMARY KEY ("id"))'
    )


@pytest.mark.parametrize(
    ("prop", "expected"),
    [
        ({"type": "integer"}, BIGINT),
        ({"type": ["number", "null"]}, NUMERIC),
        ({"type": "string", "format": "date-time"}, TIMESTAMPTZ),
        ({"type": "object"}, JSONB),
        ({"type": "array"}, JSONB),
        ({"anyOf": [{"type": "null"}, {"type": "string"}]}, TEXT),
        ({"type": ["integer", "number"]}, NUMERIC),
        ({"type": ["string", "integer"]}, JSONB),
        ({}, JSONB),
    ],
)
def test_types_for_new_columns(prop, expected):
    assert type_for_schema(prop) == expected


def test_value_encoders():
    scalar, json_, array = ENCODERS[Kind.SCALAR], ENCODERS[Kind.JSON], ENCODERS[Kind.ARRAY]
    assert [scalar(v) for v in (None, True, 3, 1.5, float("nan"), decimal.Decimal("0.010"), "x")] == [
        None, "true", "3", "1.5", "NaN", "0.010", "x",
    ]  # fmt: skip
    assert scalar(dt.datetime(2024, 6, 1, tzinfo=dt.UTC)) == "2024-06-01T00:00:00+00:00"
    assert scalar({"a": [1]}) == '{"a":[1]}'
    assert json_('{"already": "json"}') == '{"already": "json"}'
    assert json_([1, decimal.Decimal("2.5")]) == "[1,2.5]"
    assert array(["a", 'b"c', "d\\e", None, ["f"]]) == '{"a","b\\"c","d\\\\e",NULL,{"f"}}'


def test_identifiers_fit_and_stay_distinct():
    long_a = "a" * 70 + "x"
    long_b = "a" * 70 + "y"
    assert len(fit_identifier(long_a).encode()) <= 63
    assert fit_identifier(long_a) != fit_identifier(long_b)
    assert len(fit_identifier("é" * 40).encode()) <= 63
    assert (
        table_name_for_stream("test:SpecialChars!in?attributes")
        == "test_specialchars_in_attributes"
    )
    assert topic_name("aap-{table}", "booking", "Booking") == "aap-booking"
    assert topic_name("{stream}", "t", "a b/c") == "a_b_c"


def test_env_switches():
    config: dict = {}
    apply_env_switches(
        config, {"INSERT_BATCH_SIZE": "7", "BATCHED_CREATE_ENABLED": "false", "PUSH_TO_KAFKA": "1"}
    )
    assert config == {
        "insert_batch_size": 7,
        "batched_create_enabled": False,
        "kafka_enabled": True,
    }
    with pytest.raises(ConfigError, match="PUSH_TO_KAFKA"):
        apply_env_switches({}, {"PUSH_TO_KAFKA": "maybe"})


def test_retry_policy_backs_off_then_fails():
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=6, backoff_seconds=1.0, sleep=slept.append)
    calls = []

    def flaky() -> str:
        calls.append(1)
        raise TransientError("down")

    with pytest.raises(FatalError, match="after 6 attempt"):
        policy.run(flaky, what="x")
    assert slept == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert len(calls) == 6


def test_conflict_backoff_doubles_the_batches_sent_with_the_clause_then_starts_over():
    backoff = ConflictBackoff()
    tries = []
    for _ in range(12):
        if backoff.should_try("t"):
            tries.append("try")
            backoff.failed("t")
        else:
            tries.append("skip")
    assert tries == ["try", "skip", "try", "skip", "skip", "try", *["skip"] * 4, "try", "skip"]
    backoff.succeeded("t")
    for _ in range(7):  # the 7 already granted run out
        backoff.should_try("t")
    assert backoff.should_try("t")
    assert backoff.failed("t") == 1  # after a success, one batch again
    assert backoff.should_try("other")


def test_batches_encoded_ahead_join_into_one_parameter_only_for_one_plan():
    plan = InsertPlan({}, True, None)  # type: ignore[arg-type]
    other = InsertPlan({}, True, None)  # type: ignore[arg-type]
    a = Encoded(plan, '[{"id":1},{"id":2}]')
    b = Encoded(plan, '[{"id":3}]')
    joined = _joined([a, b])
    assert joined is not None
    assert joined.plan is plan
    assert json.loads(joined.param) == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert _joined([a]) == a
    assert _joined([a, None]) is None  # one batch encoded in the writer: all are
    assert _joined([None, a]) is None
    assert _joined([a, Encoded(other, "[]")]) is None  # encoded for another plan


def test_batch_kafka_messages_are_the_per_record_ones():
    """build_kafka_messages' insert loop against build_kafka_message, record by record."""
    records: list[dict[str, Any]] = [
        {"id": 1, "name": "a", "amount": decimal.Decimal("1.50")},  # another tap's insert
        {"id": 2, "name": None, "_sdc_operation": "insert", "_sdc_force_drain": True},
        {
            "id": 3,
            "_sdc_operation": "insert",
            "_sdc_source_stream": "kv{shard-1}",
            "_sdc_source_entry_id": "17-3",
        },
        {"id": 4, "_sdc_source_entry_id": "17-4"},  # an entry without its stream
        {"id": 5, "_sdc_operation": "update", "_sdc_model": {"id": 5, "x": 1}, "_sdc_where": {}},
        {
            "id": 6,
            "_sdc_operation": "delete",
            "_sdc_where": {"column": "id", "op": "=", "value": 6},
        },
        {"id": 7, "_sdc_operation": "", "_sdc_extracted_at": "2024-01-01"},
        {"id": 8, "_sdc_operation": "insert", "_sdc_model": {"ignored": True}},
        {"id": [1, 2], "nested": {"a": [1]}},
    ]
    for keys in (["id"], ["id", "name"], []):
        spec = TableSpec("people", {}, keys)
        route = TableRoute(
            "people-stream", spec, TableBatcher("people", 10), "topic-people", True, True
        )
        assert build_kafka_messages(route, records) == [
            build_kafka_message(route, r) for r in records
        ]


def test_kafka_messages_of_a_lone_surrogate_spell_it_as_the_tap_did():
    """UTF-8 cannot hold a lone surrogate: the value's JSON keeps the escape `\\ud800`
    (decoding it gives the record back), keys and headers the visible text."""
    good = {"id": 1, "s": "ok", "_sdc_source_stream": "kv", "_sdc_source_entry_id": "1-1"}
    bad = {
        "id": 2,
        "s": "a\ud800",
        "n": decimal.Decimal("1.50"),
        "_sdc_source_stream": "kv\udcff",
        "_sdc_source_entry_id": "1-2",
    }
    route = TableRoute(
        "people", TableSpec("people", {}, ["id"]), TableBatcher("people", 10), "t", True, True
    )
    messages = build_kafka_messages(route, [good, bad])
    assert messages == [build_kafka_message(route, good), build_kafka_message(route, bad)]
    assert messages[1].value == b'{"id":2,"s":"a\\ud800","n":1.50}'
    assert json.loads(messages[1].value) == {"id": 2, "s": "a\ud800", "n": 1.5}
    assert messages[1].key == b"kv\\udcff"
    assert ("source_stream", b"kv\\udcff") in messages[1].headers


def test_dead_letter_of_a_lone_surrogate_is_storable_and_names_the_column():
    record = {"id": 2, "s\udfff": ["x\ud800"], "_sdc_source_entry_id": "1-\ud800"}
    letter = DeadLetter("t", record, f"a value {NOT_UTF8} (codec says no)", None)
    _, payload, reason, _, _, entry = letter.params()
    for text in (payload, reason, entry):
        text.encode("utf-8")  # PostgreSQL can store it
    assert json.loads(payload) == {
        "id": 2,
        "s\\udfff": ["x\\ud800"],
        "_sdc_source_entry_id": "1-\\ud800",
    }
    assert reason.startswith("column 's\\\\udfff' holds a lone surrogate (U+DFFF)")
    assert entry == "1-\\ud800"


def test_a_lone_surrogate_in_a_column_name_is_dropped_with_a_hash():
    assert fit_identifier("a\ud800b").startswith("ab_")
    assert fit_identifier("a\ud800b") != fit_identifier("a\ud801b")
    assert fit_identifier("a" * 70) == fit_identifier("a" * 70)  # unchanged for other names


def test_json_with_lone_surrogates_decodes_to_the_same_value():
    value = {"k\ud800": ["\udfff", {"d": decimal.Decimal("0.1000000000000000055511151231257827")}]}
    encoded = to_json_bytes_exact(value)
    assert json.loads(encoded, parse_float=decimal.Decimal) == value
