"""Hostile input through the tap and the target: a clear error or a dead letter, never a crash.

Each case sits between good neighbours in the same stream (or input), and
each test checks that the neighbours landed, that the hostile item got a
clear error or a dead letter naming its stream, entry and reason, and that no
statement ran that should not have: the schema holds exactly the relations it
should and a canary table keeps its row.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis as redis_lib
import zstandard
from psycopg import sql

from tap_redis_stream.entries.euler_kv import quiet_snake
from target_batched_postgres.identifiers import fit_identifier
from tests.integration.tap_helpers import TAP_BIN
from tests.integration.target_helpers import (
    TARGET_BIN,
    record_msg,
    run_target_cli,
    schema_msg,
    state_msg,
    write_config,
)
from tests.kv_workload import JsonText, Raw, show

PROBE_DDL = "CREATE TABLE {} (id text PRIMARY KEY, note text, n integer, doc jsonb, tags text[]);"


# -- entries of the `Probe` table in the KV-command format -------------------------


def envelope(tag: str, command_tag: str, contents: Any, **extra: Any) -> dict[str, Any]:
    return {
        "contents_v2": {
            "cmdVersion": "V2",
            "command": {"contents": contents, "tag": command_tag},
            "dbName": "postgres",
            "tag": "probe{shard-0}",
            "timestamp": 1717236930123,
        },
        "mappings": {},
        "tag": tag,
        **extra,
    }


def create(row_id: str, fields: dict[str, Any] | None = None, **values: Any) -> bytes:
    """A Create of `probe`; `values` are shown as the KV layer does, `fields` sent as is."""
    contents = {"id": show(row_id), **{k: show(v) for k, v in values.items()}, **(fields or {})}
    return orjson.dumps(envelope("Create", "ProbeObject", contents, forceDrainToDB=False))


def update(row_id: str, **values: Any) -> bytes:
    contents = [
        [{"key": k, "value": show(v)} for k, v in values.items()],
        [{"clauseTag": "where", "clauseContents": {"id": show(row_id)}}],
    ]
    return orjson.dumps(envelope("Update", "ProbeOptions", contents, forceDrainToDB=False))


# -- running tap | target ------------------------------------------------------------


@dataclass
class Drained:
    tap_rc: int
    tap_err: str
    target_rc: int
    target_err: str
    states: list[dict[str, Any]]


def drain(
    tmp_path: Path,
    redis_url: str,
    pg_url: str,
    schema: str,
    keys: list[str],
    *,
    state: Any = None,
    tap: dict[str, Any] | None = None,
    target: dict[str, Any] | None = None,
) -> Drained:
    tap_cfg = write_config(tmp_path, {"redis_url": redis_url, "stream_keys": keys, **(tap or {})})
    target_cfg = write_config(
        tmp_path, {"database_url": pg_url, "default_target_schema": schema, **(target or {})}
    )
    command = [str(TAP_BIN), "--config", str(tap_cfg)]
    if state is not None:
        state_path = tmp_path / f"state-{len(list(tmp_path.iterdir()))}.json"
        state_path.write_text(json.dumps(state))
        command += ["--state", str(state_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        result = subprocess.run(
            [str(TARGET_BIN), "--config", str(target_cfg)],
            stdin=proc.stdout,
            capture_output=True,
            timeout=300,
            check=False,
        )
        tap_err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
        proc.wait(60)
    states = [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]
    return Drained(
        proc.returncode, tap_err, result.returncode, result.stderr.decode(errors="replace"), states
    )


# -- reading what landed -----------------------------------------------------------


@pytest.fixture
def probe(pg_conn: psycopg.Connection, pg_schema: str) -> str:
    """The probe table and a canary table (which no test may touch) in the test's schema."""
    pg_conn.execute(sql.SQL(PROBE_DDL).format(sql.Identifier(pg_schema, "probe")))
    pg_conn.execute(
        sql.SQL("CREATE TABLE {} AS SELECT 1 AS alive").format(sql.Identifier(pg_schema, "canary"))
    )
    return pg_schema


def rows(conn: psycopg.Connection, schema: str) -> dict[str, tuple]:
    # doc as text: psycopg would parse jsonb 10,000 levels deep with recursion.
    query = sql.SQL("SELECT id, note, n, doc::text, tags FROM {}").format(
        sql.Identifier(schema, "probe")
    )
    return {row[0]: row[1:] for row in conn.execute(query)}


def letters(conn: psycopg.Connection, schema: str) -> dict[str, tuple[str, str]]:
    """Dead letters by source entry ID: (source stream, error)."""
    query = sql.SQL("SELECT source_entry_id, source_stream, error FROM {}").format(
        sql.Identifier(schema, "_dead_letters")
    )
    return {entry: (stream, error) for entry, stream, error in conn.execute(query)}


def assert_nothing_else_ran(conn: psycopg.Connection, schema: str, *extra_tables: str) -> None:
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
            (schema,),
        )
    }
    assert tables == {"probe", "canary", "_dead_letters", *extra_tables}
    canary = conn.execute(
        sql.SQL("SELECT alive FROM {}").format(sql.Identifier(schema, "canary"))
    ).fetchall()
    assert canary == [(1,)]
    functions = conn.execute(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s",
        (schema,),
    ).fetchone()
    assert functions == (0,)


def entry(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq))


def xadd_all(client: redis_lib.Redis, key: str, payloads: list[bytes]) -> list[str]:
    added: list[Any] = [client.xadd(key, {"command": p}) for p in payloads]
    return [a.decode() for a in added]


# -- 1. entries the tap cannot decode --------------------------------------------------

GOOD = create("x", note="fine")
DEEP_WHERE = (
    '{"contents_v2":{"cmdVersion":"V2","command":{"contents":[[{"key":"note","value":"\\"v\\""}],'
    '[{"clauseTag":"where","clauseContents":'
    + '{"$and":[' * 500
    + '{"id":"\\"a\\""}'
    + "]}" * 500
    + '}]],"tag":"ProbeOptions"},"dbName":"postgres","tag":"t","timestamp":1},"mappings":{},'
    '"tag":"Update"}'
).encode()
DEEP_MODEL = orjson.loads(update("a", note="v"))
UNDECODABLE = {
    "malformed JSON": (b'{"tag": "Create", "contents_v2": {', "not valid JSON"),
    "JSON array, not an object": (b"[1, 2, 3]", "expected an object"),
    "truncated zstd frame": (zstandard.ZstdCompressor().compress(GOOD * 20)[:-9], "zstd"),
    "fake zstd frame": (b"\x28\xb5\x2f\xfd" + b"this is no frame", "zstd"),
    "zstd bomb": (
        zstandard.ZstdCompressor().compress(b" " * (65 * 1024 * 1024)),
        "max_decompressed_bytes",
    ),
    "non-UTF-8 bytes": (b'{"tag": "Create", "contents_v2": "\xff\xfe"}', "UTF-8"),
    "JSON nested 10,000 deep": (
        b'{"tag":"Create","contents_v2":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        "depth",
    ),
    "where clause nested 500 deep": (DEEP_WHERE, "nested too deeply"),
    "updatedModel nested 3,000 deep": (
        json.dumps({**DEEP_MODEL, "updatedModel": 0})
        .replace('"updatedModel": 0', '"updatedModel": ' + '{"a":' * 3000 + "{}" + "}" * 3000)
        .encode(),
        "depth limit exceeded",  # orjson refuses the envelope (a few hundred levels pass)
    ),
    "lone surrogate in text": (create("s", note=Raw('"\\55296"')), "surrogates"),
    "wrong JSON type for a value": (create("w", fields={"n": 7}), "expected"),
}


@pytest.mark.parametrize("case", list(UNDECODABLE), ids=list(UNDECODABLE))
def test_an_undecodable_entry_stops_the_tap_before_it_then_moves_aside(
    tmp_path, redis_url, redis_client, pg_url, pg_conn, probe, unique, case
):
    payload, reason = UNDECODABLE[case]
    key = f"hostile-{unique}"
    before, bad, after = xadd_all(
        redis_client, key, [create("before", note="b"), payload, create("after", note="a")]
    )
    stopped = drain(tmp_path, redis_url, pg_url, probe, [key])
    assert stopped.tap_rc != 0
    assert f"cannot decode stream {key!r}, entry {bad}" in stopped.tap_err
    assert reason in stopped.tap_err
    assert "Traceback" not in stopped.tap_err
    assert stopped.target_rc == 0, stopped.target_err[-2000:]
    assert stopped.states[-1] == {"stream_ids": {key: before}}  # the bookmark stays before it
    assert set(rows(pg_conn, probe)) == {"before"}
    failed = f"failed-{unique}"
    moved = drain(
        tmp_path,
        redis_url,
        pg_url,
        probe,
        [key],
        state=stopped.states[-1],
        tap={"on_parse_error": "dead_letter", "failed_stream": failed},
    )
    assert (moved.tap_rc, moved.target_rc) == (0, 0), moved.tap_err[-2000:]
    assert set(rows(pg_conn, probe)) == {"before", "after"}  # no neighbour lost
    assert moved.states[-1] == {"stream_ids": {key: after}}
    ((_, fields),) = redis_client.xrange(failed)
    assert fields[b"source_stream"].decode() == key
    assert fields[b"source_entry_id"].decode() == bad
    assert reason in fields[b"reason"].decode()
    assert fields[b"field:command"] == payload
    assert_nothing_else_ran(pg_conn, probe)


def test_a_stream_key_that_is_not_utf8_is_a_clear_error(tmp_path, redis_url, redis_client, unique):
    redis_client.xadd(f"nk-{unique}-ok".encode(), {"command": GOOD})
    redis_client.xadd(f"nk-{unique}-".encode() + b"\xff", {"command": GOOD})
    cfg = write_config(tmp_path, {"redis_url": redis_url, "stream_keys": [f"nk-{unique}-*"]})
    result = subprocess.run(
        [str(TAP_BIN), "--config", str(cfg)], capture_output=True, timeout=120, check=False
    )
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "is not UTF-8" in err
    assert "\\xff" in err
    assert "Traceback" not in err


# -- 2. NUL bytes --------------------------------------------------------------------

NUL_CASES = {
    "text": (create("t", note="a\x00b", n=1), ("ab", 1, None, None)),
    "array": (create("r", tags=["a\x00", "b"]), (None, None, None, ["a", "b"])),
    "update": (update("before", note="up\x00dated"), None),
    "column name": (create("c", fields={"no\x00te": show("named")}), None),
}


@pytest.mark.parametrize("mode", ["reject", "strip"])
def test_nul_bytes_are_dead_lettered_or_stripped_never_a_crash(
    tmp_path, redis_url, redis_client, pg_url, pg_conn, probe, unique, mode
):
    key = f"nul-{unique}"
    ids = xadd_all(
        redis_client,
        key,
        [
            create("before", note="b"),
            *(payload for payload, _ in NUL_CASES.values()),
            create("jsonb", doc=JsonText({"k": "v\x00"})),  # JSON text: the escape \u0000
            create("after", note="a"),
        ],
    )
    result = drain(
        tmp_path,
        redis_url,
        pg_url,
        probe,
        [key],
        target={"nul_bytes": mode, "insert_batch_size": 3},
    )
    assert (result.tap_rc, result.target_rc) == (0, 0), result.target_err[-3000:]
    assert result.states[-1] == {"stream_ids": {key: ids[-1]}}
    got = rows(pg_conn, probe)
    dead = letters(pg_conn, probe)
    text, array, updated, _named, jsonb = ids[1:6]
    assert {"before", "after"} <= set(got)
    # jsonb cannot hold the escape \u0000 in either mode: dead-lettered, the column named.
    assert dead[jsonb][0] == key
    assert "'doc'" in dead[jsonb][1]
    assert "\\u0000" in dead[jsonb][1]
    column = fit_identifier("no\x00te") if mode == "reject" else "note"
    named_value = pg_conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE id = 'c'").format(
            sql.Identifier(column), sql.Identifier(probe, "probe")
        )
    ).fetchone()
    assert named_value == ("named",)
    if mode == "reject":
        assert set(dead) == {text, array, updated, jsonb}
        for entry, col in ((text, "note"), (array, "tags"), (updated, "note")):
            assert dead[entry][0] == key
            assert f"column {col!r} holds a NUL byte" in dead[entry][1]
        assert got["before"][0] == "b"
    else:
        assert set(dead) == {jsonb}
        assert got["t"] == NUL_CASES["text"][1]
        assert got["r"] == NUL_CASES["array"][1]
        assert got["before"][0] == "updated"
    assert_nothing_else_ran(pg_conn, probe)


def test_a_nul_in_a_where_value_is_a_dead_letter_not_a_crash(pg_url, pg_conn, probe, tmp_path):
    lines = [
        schema_msg(
            "probe", {"id": {"type": "string"}, "note": {"type": ["string", "null"]}}, ["id"]
        ),
        record_msg("probe", {"id": "a", "note": "x"}),
        record_msg(
            "probe",
            {
                "note": "y",
                "_sdc_operation": "update",
                "_sdc_where": {"column": "id", "op": "=", "value": "a\x00"},
                "_sdc_source_stream": "s",
                "_sdc_source_entry_id": "1-2",
            },
        ),
        record_msg("probe", {"id": "b", "note": "z"}),
        state_msg({"done": True}),
    ]
    result = run_target_cli(
        tmp_path, {"database_url": pg_url, "default_target_schema": probe}, lines
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(rows(pg_conn, probe)) == {"a", "b"}
    assert "_sdc_where" in letters(pg_conn, probe)["1-2"][1]


# -- 3. SQL metacharacters in values and names ------------------------------------------

META_VALUES = [
    "'); DROP TABLE canary; --",
    "$$; DROP TABLE canary; $$",
    "\\'; DELETE FROM canary; --",
    "%s %(x)s %% %b %t",
    '"; DROP TABLE canary; --',
    "{}[]()\\\\ \n\t\r",
    "E'\\x00'::text",
]
META_NAMES = ["pct%", "a%sb", "x%(y)s", 'we"ird', "x'); DROP TABLE canary; --"]


def test_sql_metacharacters_in_values_and_names_are_data(
    tmp_path, redis_url, redis_client, pg_url, pg_conn, probe, unique
):
    key = f"meta-{unique}"
    payloads = [create(f"v{i}", note=value) for i, value in enumerate(META_VALUES)]
    payloads.append(create("names", fields={name: show(name) for name in META_NAMES}))
    payloads.append(update("v0", note="'; UPDATE canary SET alive = 0; --"))
    payloads.append(  # a where value that would match everything if it were SQL
        orjson.dumps(
            envelope(
                "Delete",
                "ProbeOptions",
                {"clauseTag": "where", "clauseContents": {"id": show("x' OR '1'='1")}},
            )
        )
    )
    ids = xadd_all(redis_client, key, [create("before"), *payloads, create("after")])
    result = drain(tmp_path, redis_url, pg_url, probe, [key])
    assert (result.tap_rc, result.target_rc) == (0, 0), result.target_err[-3000:]
    assert result.states[-1] == {"stream_ids": {key: ids[-1]}}
    got = rows(pg_conn, probe)
    assert {"before", "after", "names"} <= set(got)
    assert got["v0"][0] == "'; UPDATE canary SET alive = 0; --"
    for i, value in enumerate(META_VALUES[1:], start=1):
        assert got[f"v{i}"][0] == value
    for name in META_NAMES:
        column = fit_identifier(quiet_snake(name))
        stored = pg_conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE id = 'names'").format(
                sql.Identifier(column), sql.Identifier(probe, "probe")
            )
        ).fetchone()
        assert stored == (name,), column
    assert letters(pg_conn, probe) == {}
    assert_nothing_else_ran(pg_conn, probe)


# -- 4. a 10 MB row ------------------------------------------------------------------


def test_a_ten_megabyte_row_lands_and_kafka_refusing_it_is_a_clear_error(
    tmp_path, redis_url, redis_client, pg_url, pg_conn, probe, kafka_bootstrap, unique
):
    key = f"big-{unique}"
    big = "x" * (10 * 1024 * 1024)
    ids = xadd_all(redis_client, key, [create("before"), create("big", note=big), create("after")])
    result = drain(tmp_path, redis_url, pg_url, probe, [key])
    assert (result.tap_rc, result.target_rc) == (0, 0), result.target_err[-3000:]
    got = rows(pg_conn, probe)
    assert set(got) == {"before", "big", "after"}
    assert len(got["big"][0]) == len(big)
    # With Kafka on, the broker's default 1 MB limit refuses it: the run stops naming
    # the entry; nothing after the last durable STATE is lost (the rerun replays it).
    kafka = {
        "kafka_enabled": True,
        "kafka_bootstrap_servers": kafka_bootstrap,
        "kafka_topic_template": f"{unique}-{{table}}",
    }
    again = drain(tmp_path, redis_url, pg_url, probe, [key], target=kafka)
    assert again.target_rc != 0
    assert f"source_entry_id {ids[1]!r}" in again.target_err
    assert "Message size too large" in again.target_err
    assert all(entry(s.get("stream_ids", {}).get(key, "0-0")) < entry(ids[1]) for s in again.states)


# -- 5. deeply nested JSON -----------------------------------------------------------


def test_deeply_nested_json_is_stored_or_a_clear_error_never_a_recursion_crash(
    tmp_path, redis_url, redis_client, pg_url, pg_conn, probe, unique
):
    key = f"deep-{unique}"
    deep_text = "[" * 10_000 + "]" * 10_000
    ids = xadd_all(
        redis_client,
        key,
        [create("before"), create("deep", fields={"doc": json.dumps(deep_text)}), create("after")],
    )
    result = drain(tmp_path, redis_url, pg_url, probe, [key])
    assert (result.tap_rc, result.target_rc) == (0, 0), result.target_err[-3000:]
    assert result.states[-1] == {"stream_ids": {key: ids[-1]}}
    assert {"before", "deep", "after"} == set(rows(pg_conn, probe))  # jsonb holds 10,000 levels
    # Straight into the target: a line 10,000 deep cannot be parsed: a clear error.
    line = '{"type":"RECORD","stream":"probe","record":{"id":"d2","doc":' + deep_text + "}}"
    props = {"id": {"type": "string"}, "doc": {}}
    direct = run_target_cli(
        tmp_path,
        {"database_url": pg_url, "default_target_schema": probe},
        [schema_msg("probe", props, ["id"]), record_msg("probe", {"id": "d1"}), line],
    )
    assert direct.returncode != 0
    assert "Unable to parse line as JSON" in direct.stderr
    assert (
        direct.stderr.strip()
        .splitlines()[-1]
        .startswith("singer_sdk.singerlib.exceptions.InvalidInputLine")
    )
    # 300 levels parse: stored.
    nested = {"id": "d3", "doc": json.loads("[" * 300 + "]" * 300)}
    ok = run_target_cli(
        tmp_path,
        {"database_url": pg_url, "default_target_schema": probe},
        [schema_msg("probe", props, ["id"]), record_msg("probe", nested), state_msg({"s": 1})],
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "d3" in rows(pg_conn, probe)
    assert_nothing_else_ran(pg_conn, probe)


# -- 6. wrong types for existing columns ----------------------------------------------

WRONG_TYPES = {
    "text into integer": (create("t1", n="abc"), "integer"),
    "fraction into integer": (create("t2", n=Raw("1.5")), "integer"),
    "array into integer": (create("t3", fields={"n": ["1", "2"]}), "integer"),
    "non-JSON into jsonb": (create("t4", doc="not json"), "json"),
    "scalar into text[]": (create("t5", tags="notarray"), "array"),
    "update: text into integer": (update("before", n="x"), "integer"),
}


def test_wrong_types_for_existing_columns_are_dead_lettered(
    tmp_path, redis_url, redis_client, pg_url, pg_conn, probe, unique
):
    key = f"types-{unique}"
    ids = xadd_all(
        redis_client,
        key,
        [create("before", n=1), *(p for p, _ in WRONG_TYPES.values()), create("after", n=2)],
    )
    result = drain(tmp_path, redis_url, pg_url, probe, [key], target={"insert_batch_size": 4})
    assert (result.tap_rc, result.target_rc) == (0, 0), result.target_err[-3000:]
    assert result.states[-1] == {"stream_ids": {key: ids[-1]}}
    got = rows(pg_conn, probe)
    assert set(got) == {"before", "after"}
    assert got["before"][1] == 1
    dead = letters(pg_conn, probe)
    assert set(dead) == set(ids[1:-1])
    for entry, (_, word) in zip(ids[1:-1], WRONG_TYPES.values(), strict=True):
        assert dead[entry][0] == key
        assert word in dead[entry][1].lower(), dead[entry][1]
    assert_nothing_else_ran(pg_conn, probe)


def test_an_object_into_an_integer_column_is_dead_lettered(pg_url, pg_conn, probe, tmp_path):
    props = {"id": {"type": "string"}, "n": {"type": ["integer", "null"]}}
    source = {"_sdc_source_stream": "s"}
    lines = [
        schema_msg("probe", props, ["id"]),
        record_msg("probe", {"id": "a", "n": 1, **source, "_sdc_source_entry_id": "1-1"}),
        record_msg("probe", {"id": "b", "n": {"k": 1}, **source, "_sdc_source_entry_id": "1-2"}),
        record_msg("probe", {"id": "c", "n": 3, **source, "_sdc_source_entry_id": "1-3"}),
        state_msg({"s": 1}),
    ]
    result = run_target_cli(
        tmp_path, {"database_url": pg_url, "default_target_schema": probe}, lines
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(rows(pg_conn, probe)) == {"a", "c"}
    assert set(letters(pg_conn, probe)) == {"1-2"}


def test_a_line_that_is_not_utf8_is_a_clear_error(pg_url, probe, tmp_path):
    cfg = write_config(tmp_path, {"database_url": pg_url, "default_target_schema": probe})
    lines = [
        schema_msg("probe", {"id": {"type": "string"}}, ["id"]).encode(),
        record_msg("probe", {"id": "a"}).encode(),
        b'{"type":"RECORD","stream":"probe","record":{"id":"\xff\xfe"}}',
    ]
    result = subprocess.run(
        [str(TARGET_BIN), "--config", str(cfg)],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    last = result.stderr.decode(errors="replace").strip().splitlines()[-1]
    assert last.startswith("singer_sdk.singerlib.exceptions.InvalidInputLine"), last
    # msgspec 0.23 says "Invalid UTF-8 encoded string", earlier ones "'utf-8' codec can't ...".
    assert "utf-8" in last.lower()


# -- 7. entry IDs at the edges ---------------------------------------------------------

MAX_ID = "18446744073709551615-18446744073709551615"


def test_entry_ids_at_the_edges(tmp_path, redis_url, redis_client, pg_url, pg_conn, probe, unique):
    key = f"edges-{unique}"
    redis_client.xadd(key, {"command": create("first")}, id="0-1")
    redis_client.xadd(key, {"command": create("middle")}, id="18446744073709551615-0")
    redis_client.xadd(key, {"command": create("last")}, id=MAX_ID)
    with pytest.raises(redis_lib.ResponseError):  # Redis allows nothing after it
        redis_client.xadd(key, {"command": create("never")})
    result = drain(tmp_path, redis_url, pg_url, probe, [key])
    assert (result.tap_rc, result.target_rc) == (0, 0), result.tap_err[-3000:]
    assert result.states[-1] == {"stream_ids": {key: MAX_ID}}
    assert set(rows(pg_conn, probe)) == {"first", "middle", "last"}
    rerun = drain(
        tmp_path, redis_url, pg_url, probe, [key], state=result.states[-1],
        tap={"trim_acknowledged": True},
    )  # fmt: skip
    assert (rerun.tap_rc, rerun.target_rc) == (0, 0), rerun.tap_err[-3000:]
    assert rerun.states[-1] == {"stream_ids": {key: MAX_ID}}
    assert redis_client.xlen(key) == 0  # everything at or below the last ID is durable
    assert letters(pg_conn, probe) == {}


# -- 8. reserved words and long names through the tap -------------------------------------


def test_reserved_words_and_long_colliding_names_through_the_tap(
    tmp_path, redis_url, redis_client, pg_url, pg_conn, pg_schema, unique
):
    long_a, long_b = "c" * 70 + "A", "c" * 70 + "B"
    contents = {
        "id": show("1"),
        "select": show("s"),
        "from": show("f"),
        long_a: show("a"),
        long_b: show("b"),
    }
    key = f"order-{unique}"
    redis_client.xadd(
        key,
        {
            "command": orjson.dumps(
                envelope("Create", "OrderObject", contents, forceDrainToDB=False)
            )
        },
    )
    result = drain(tmp_path, redis_url, pg_url, pg_schema, [key])
    assert (result.tap_rc, result.target_rc) == (0, 0), result.target_err[-3000:]
    columns = [
        "select",
        "from",
        fit_identifier(quiet_snake(long_a)),
        fit_identifier(quiet_snake(long_b)),
    ]
    got = pg_conn.execute(
        sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(pg_schema, "order")
        )
    ).fetchall()
    assert got == [("s", "f", "a", "b")]
