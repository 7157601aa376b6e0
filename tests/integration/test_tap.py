"""tap-redis-stream against a real Redis."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import signal
import subprocess
import time
from typing import Any

import orjson
import pytest
import redis as redis_lib
import zstandard

from tap_redis_stream import reader as reader_module
from tap_redis_stream.reader import Reader
from tap_redis_stream.tap import TapRedisStream
from tests import kv_workload
from tests.integration.tap_helpers import TAP_BIN, in_process_reader, run_tap
from tests.servers import free_port
from tests.stop_signals import output_while_stopping

SPEC_CREATE = {
    "contents_v2": {
        "cmdVersion": "V2",
        "command": {
            "contents": {
                "additionalInfo": "SqlNull",
                "bookingId": '"9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3"',
                "createdAt": "2024-06-01 10:15:30.123456 UTC",
                "distanceUnit": '"Meter"',
                "driverDistToPickup": "850",
                "driverDistToPickupValue": "850.0",
                "reasonCode": '"DRIVER_NOT_MOVING"',
                "rideId": "SqlNull",
                "source": '"ByUser"',
            },
            "tag": "BookingCancellationReasonObject",
        },
        "dbName": "postgres",
        "tag": "bookingCancellationReason_bookingId_9c1f3a52{shard-5}",
        "timestamp": 1717236930123,
    },
    "forceDrainToDB": False,
    "mappings": {},
    "modelObject": {"bookingId": "9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3"},
    "tag": "Create",
}


def seed(client: redis_lib.Redis, base: str, n: int, first: int = 0, shards: int = 3) -> None:
    entries = list(kv_workload.creates(first + n, seed=5, stream_base=base, shards=shards))[first:]
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(entry.stream_key, {"command": entry.payload})
    pipe.execute()


# Every test here runs twice: decoding in the tap's process, and in two
# decode workers (decode_pool), which must not change what the tap does.
DECODE_WORKERS = 0


@pytest.fixture(autouse=True, params=[0, 2], ids=["in-process", "2-decode-workers"])
def decode_workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(f"{__name__}.DECODE_WORKERS", request.param)
    return int(request.param)


def config(redis_url: str, *keys: str, **extra: object) -> dict[str, object]:
    workers = {"decode_workers": DECODE_WORKERS} if DECODE_WORKERS else {}
    return {"redis_url": redis_url, "stream_keys": list(keys), **workers, **extra}


def test_three_runs_read_every_entry_exactly_once(tmp_path, redis_url, redis_client, unique):
    base = f"s-{unique}"
    cfg = config(redis_url, f"{base}{{shard-*}}", read_count=7)
    seen: list[tuple[str, str]] = []
    state = None
    for run_number in range(3):
        seed(redis_client, base, 40, first=40 * run_number)
        run = run_tap(tmp_path, cfg, state)
        assert run.returncode == 0, run.stderr[-2000:]
        seen += [(r["_sdc_source_stream"], r["_sdc_source_entry_id"]) for r in run.records]
        state = run.states[-1]
    assert len(seen) == 120
    assert len(set(seen)) == 120
    for key in {k for k, _ in seen}:
        stored = [(key, i.decode()) for i, _ in redis_client.xrange(key)]
        assert sorted(s for s in seen if s[0] == key) == sorted(stored)


def test_an_in_process_run_leaves_the_garbage_collector_as_it_was(redis_url, redis_client, unique):
    """Only the command line tunes the collector (startup objects frozen, fewer
    collections): a tap run inside another program leaves that program's as it was."""
    base = f"gc-{unique}"
    seed(redis_client, base, 5)
    before = (gc.get_threshold(), gc.get_freeze_count())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        TapRedisStream(config=config(redis_url, f"{base}{{shard-*}}")).sync_all()
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    assert out.getvalue().count('"type":"RECORD"') == 5


def test_entry_ids_compare_as_numbers(tmp_path, redis_url, redis_client, unique):
    key = f"ids-{unique}"
    payload = orjson.dumps(SPEC_CREATE)
    for seq in range(1, 11):
        redis_client.xadd(key, {"command": payload}, id=f"1-{seq}")
    run = run_tap(tmp_path, config(redis_url, key), {"stream_ids": {key: "1-9"}})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.entry_ids() == ["1-10"]  # as strings "1-10" < "1-9" would re-read 1-10... or skip it
    assert run.states[-1] == {"stream_ids": {key: "1-10"}}


def test_scan_patterns_select_only_matching_stream_keys(tmp_path, redis_url, redis_client, unique):
    base = f"rider-db-sync-stream-{unique}"
    seed(redis_client, base, 12, shards=4)
    seed(redis_client, f"driver-{unique}", 5, shards=1)  # does not match
    redis_client.set(f"{base}{{shard-9}}", "not a stream")  # matches, wrong type
    run = run_tap(tmp_path, config(redis_url, f"{base}{{shard-*}}"))
    assert run.returncode == 0, run.stderr[-2000:]
    keys = {r["_sdc_source_stream"] for r in run.records}
    assert keys == {f"{base}{{shard-{i}}}" for i in range(4)}
    assert len(run.records) == 12


def test_zstd_and_spec_create_decode(tmp_path, redis_url, redis_client, unique):
    key = f"z-{unique}"
    data = orjson.dumps(SPEC_CREATE)
    redis_client.xadd(key, {"command": data})
    redis_client.xadd(key, {"command": zstandard.ZstdCompressor().compress(data)})
    run = run_tap(tmp_path, config(redis_url, key, key_properties=["booking_id"]))
    assert run.returncode == 0, run.stderr[-2000:]
    plain, compressed = run.records
    assert plain == compressed | {"_sdc_source_entry_id": plain["_sdc_source_entry_id"]}
    row = {k: v for k, v in plain.items() if not k.startswith("_sdc_")}
    assert row == {
        "additional_info": None,
        "booking_id": "9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3",
        "created_at": "2024-06-01 10:15:30.123456 UTC",
        "distance_unit": "Meter",
        "driver_dist_to_pickup": 850,
        "driver_dist_to_pickup_value": 850.0,
        "reason_code": "DRIVER_NOT_MOVING",
        "ride_id": None,
        "source": "ByUser",
    }
    assert plain["_sdc_operation"] == "insert"
    assert run.schemas[0]["stream"] == "booking_cancellation_reason"
    assert run.schemas[0]["key_properties"] == ["booking_id"]


def _with_value(field: str, value: object) -> dict:
    entry = orjson.loads(orjson.dumps(SPEC_CREATE))
    entry["contents_v2"]["command"]["contents"][field] = value
    return entry


POISON = [
    (b"not json", "not"),
    (zstandard.ZstdCompressor().compress(b'{"tag": "Create"}' * 30)[:-5], "zstd"),
    (b"\x28\xb5\x2f\xfd" + b"fake frame", "zstd"),
    (orjson.dumps({**SPEC_CREATE, "tag": "Upsert"}), "Upsert"),
    (orjson.dumps({k: v for k, v in SPEC_CREATE.items() if k != "contents_v2"}), "contents_v2"),
    (
        orjson.dumps(_with_value("driverDistToPickup", 850)),
        "driverDistToPickup",
    ),  # a number, not a string
    (orjson.dumps(_with_value("source", '"bad \\q escape"')), "escape"),
]


@pytest.mark.parametrize(("payload", "reason"), POISON, ids=[r for _, r in POISON])
def test_poison_entry_stops_the_tap_before_it(
    tmp_path, redis_url, redis_client, unique, payload, reason
):
    key = f"p-{unique}"
    good = orjson.dumps(SPEC_CREATE)
    first = redis_client.xadd(key, {"command": good}).decode()
    bad = redis_client.xadd(key, {"command": payload}).decode()
    redis_client.xadd(key, {"command": good})
    run = run_tap(tmp_path, config(redis_url, key))
    assert run.returncode != 0
    assert f"stream {key!r}, entry {bad}" in run.stderr
    assert reason in run.stderr
    assert run.entry_ids() == [first]
    assert run.states[-1] == {"stream_ids": {key: first}}


def test_poison_entries_go_to_the_failed_stream(tmp_path, redis_url, redis_client, unique):
    key = f"p-{unique}"
    failed = f"failed-{unique}"
    good = orjson.dumps(SPEC_CREATE)
    redis_client.xadd(key, {"command": good})
    bad_ids = [redis_client.xadd(key, {"command": p}).decode() for p, _ in POISON]
    last = redis_client.xadd(key, {"command": good}).decode()
    run = run_tap(
        tmp_path, config(redis_url, key, on_parse_error="dead_letter", failed_stream=failed)
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.records) == 2
    assert run.states[-1] == {"stream_ids": {key: last}}
    letters = redis_client.xrange(failed)
    assert [f[b"source_entry_id"].decode() for _, f in letters] == bad_ids
    assert all(f[b"source_stream"].decode() == key and f[b"reason"] for _, f in letters)
    assert letters[0][1][b"field:command"] == b"not json"


def test_trimming_never_passes_the_incoming_bookmark(tmp_path, redis_url, redis_client, unique):
    key = f"t-{unique}"
    payload = orjson.dumps(SPEC_CREATE)
    ids = [redis_client.xadd(key, {"command": payload}).decode() for _ in range(10)]
    run = run_tap(
        tmp_path, config(redis_url, key, trim_acknowledged=True), {"stream_ids": {key: ids[5]}}
    )
    assert run.returncode == 0, run.stderr[-2000:]
    remaining = [i.decode() for i, _ in redis_client.xrange(key)]
    assert remaining == ids[6:]
    assert run.entry_ids() == ids[6:]
    # Without state nothing is trimmed.
    again = run_tap(tmp_path, config(redis_url, key, trim_acknowledged=True))
    assert again.entry_ids() == ids[6:]
    assert [i.decode() for i, _ in redis_client.xrange(key)] == ids[6:]


def test_record_limit_and_latest_start(tmp_path, redis_url, redis_client, unique):
    key = f"l-{unique}"
    payload = orjson.dumps(SPEC_CREATE)
    ids = [redis_client.xadd(key, {"command": payload}).decode() for _ in range(6)]
    limited = run_tap(tmp_path, config(redis_url, key, record_limit=4, read_count=3))
    assert limited.entry_ids() == ids[:4]
    assert limited.states[-1] == {"stream_ids": {key: ids[3]}}
    latest = run_tap(tmp_path, config(redis_url, key, start_from="latest"))
    assert latest.entry_ids() == []
    assert latest.states[-1] == {"stream_ids": {key: ids[-1]}}


def test_shards_partition_the_keys(tmp_path, redis_url, redis_client, unique):
    base = f"sh-{unique}"
    seed(redis_client, base, 40, shards=8)
    got = []
    for index in range(3):
        run = run_tap(
            tmp_path, config(redis_url, f"{base}{{shard-*}}", shard_index=index, shard_count=3)
        )
        got.append({r["_sdc_source_stream"] for r in run.records})
    assert set.union(*got) == {f"{base}{{shard-{i}}}" for i in range(8)}
    assert sum(len(g) for g in got) == 8  # disjoint


def test_fields_and_json_formats(tmp_path, redis_url, redis_client, unique):
    key = f"orders{{{unique}}}"
    redis_client.xadd(
        key, {"table": "orders", "id": "7", "total": "12.5", "note": "hi", "meta": '{"a":1}'}
    )
    run = run_tap(tmp_path, config(redis_url, key, entry_format="fields"))
    assert run.records[0] | {"_sdc_source_entry_id": "x"} == {
        "id": 7, "total": 12.5, "note": "hi", "meta": {"a": 1},
        "_sdc_operation": "insert", "_sdc_force_drain": False,
        "_sdc_source_stream": key, "_sdc_source_entry_id": "x",
    }  # fmt: skip
    jkey = f"j-{unique}"
    redis_client.xadd(jkey, {"data": json.dumps({"id": 1, "name": "x"})})
    redis_client.xadd(
        jkey,
        {"data": json.dumps({"op": "delete", "where": {"column": "id", "op": "=", "value": 1}})},
    )
    redis_client.xadd(jkey, {"data": "[1, 2]"})
    run = run_tap(
        tmp_path, config(redis_url, jkey, entry_format="json", table_template="tbl_{stream}")
    )
    assert run.returncode != 0
    assert "not a JSON object" in run.stderr
    assert [r["_sdc_operation"] for r in run.records] == ["insert", "delete"]
    assert run.records[1]["_sdc_where"] == {"column": "id", "op": "=", "value": 1}
    assert {s["stream"] for s in run.schemas} == {f"tbl_j-{unique}"}


def test_discover_lists_tables_and_columns(tmp_path, redis_url, redis_client, unique):
    base = f"d-{unique}"
    seed(redis_client, base, 10)
    run = run_tap(tmp_path, config(redis_url, f"{base}{{shard-*}}"), args=("--discover",))
    assert run.returncode == 0, run.stderr[-2000:]
    catalog = run.messages[0]
    streams = {s["tap_stream_id"]: s for s in catalog["streams"]}
    assert set(streams) == {t.name for t in kv_workload.TABLES}
    booking = streams["booking"]["schema"]["properties"]
    assert {"id", "rider_id", "status", "estimated_fare", "is_scheduled", "start_time"} <= set(
        booking
    )


def test_follow_mode_picks_up_new_entries_and_stops_on_sigterm(
    tmp_path, redis_url, redis_client, unique
):
    key = f"f-{unique}"
    payload = orjson.dumps(SPEC_CREATE)
    first = redis_client.xadd(key, {"command": payload}).decode()
    cfg = tmp_path / "follow.json"
    cfg.write_text(json.dumps(config(redis_url, key, follow=True, heartbeat_seconds=0.3)))
    proc = subprocess.Popen(
        [str(TAP_BIN), "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    seen: list[str] = []
    heartbeats = 0
    added = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = json.loads(proc.stdout.readline())
        if message["type"] == "RECORD":
            seen.append(message["record"]["_sdc_source_entry_id"])
        if message["type"] == "STATE":
            heartbeats += 1
            if added is None and seen == [first]:
                added = redis_client.xadd(key, {"command": payload}).decode()
        if added is not None and added in seen and heartbeats > 3:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert seen == [first, added]
    final = [json.loads(line) for line in rest.decode().splitlines() if line.strip()]
    assert final[-1] == {"type": "STATE", "value": {"stream_ids": {key: added}}}


def test_catalog_deselection_skips_a_table_and_new_tables_pass(
    tmp_path, redis_url, redis_client, unique
):
    base = f"c-{unique}"
    seed(redis_client, base, 10)
    discovered = run_tap(tmp_path, config(redis_url, f"{base}{{shard-*}}"), args=("--discover",))
    catalog = discovered.messages[0]
    catalog["streams"] = [
        s for s in catalog["streams"] if s["tap_stream_id"] != "fare_v2"
    ]  # unknown: passes
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] != "booking"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog))
    run = run_tap(tmp_path, config(redis_url, f"{base}{{shard-*}}"), args=("--catalog", str(path)))
    assert run.returncode == 0, run.stderr[-2000:]
    tables = {s["stream"] for s in run.schemas}
    assert tables == {t.name for t in kv_workload.TABLES} - {"booking"}
    assert len(run.records) == 8


def test_password_in_url_works_and_is_never_logged(tmp_path, unique):
    from tests.servers import start_redis

    server = start_redis(extra_args=["--requirepass", "s3cret-pw"])
    try:
        host = server.url.removeprefix("redis://")
        client = redis_lib.Redis.from_url(f"redis://:s3cret-pw@{host}")
        key = f"auth-{unique}"
        client.xadd(key, {"command": orjson.dumps(SPEC_CREATE)})
        client.close()
        ok = run_tap(tmp_path, config(f"redis://default:s3cret-pw@{host}", key))
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert len(ok.records) == 1
        bad = run_tap(tmp_path, config(f"redis://default:wrong-pw@{host}", key))
        assert bad.returncode != 0
        assert "WRONGPASS" in bad.stderr or "invalid username-password" in bad.stderr
        assert "s3cret-pw" not in ok.stderr + bad.stderr
        assert "wrong-pw" not in bad.stderr
    finally:
        server.stop()


def test_stop_signals_while_writing_lose_no_line(tmp_path, redis_url, redis_client, unique):
    """SIGSTOP/SIGCONT (Ctrl-Z, a debugger or py-spy attaching) cut the tap's blocking
    writes to a full pipe short; every line must still arrive, whole and once."""
    base = f"stop-{unique}"
    seed(redis_client, base, 20_000, shards=2)
    cfg = tmp_path / "stop.json"
    cfg.write_text(json.dumps(config(redis_url, f"{base}{{shard-*}}", read_count=1000)))
    proc = subprocess.Popen(
        [str(TAP_BIN), "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    lines = output_while_stopping(proc, max_stops=40).splitlines()
    messages = [json.loads(line) for line in lines]  # a cut line fails here
    records = [m["record"] for m in messages if m["type"] == "RECORD"]
    ids = {(r["_sdc_source_stream"], r["_sdc_source_entry_id"]) for r in records}
    assert len(records) == len(ids) == 20_000


def _in_process_reader(redis_url: str, keys: list[str], out: io.BytesIO, **settings: Any) -> Reader:
    """in_process_reader, decoding in process or in workers as this test runs."""
    return in_process_reader(redis_url, keys, out, **{"decode_workers": DECODE_WORKERS, **settings})


def _records_and_last_state(out: io.BytesIO) -> tuple[list[tuple[str, str]], Any]:
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    records = [
        (m["record"]["_sdc_source_stream"], str(m["record"]["id"]))
        for m in messages
        if m["type"] == "RECORD"
    ]
    return records, [m["value"] for m in messages if m["type"] == "STATE"][-1]


def test_a_lock_lost_during_a_slow_read_drops_that_keys_entries(redis_url, redis_client, unique):
    """The drainer takes a shard's lock while a read of it is slow (blocked in
    follow mode, or retried while Redis was away, past the TTL): that read's
    entries of the key are not emitted, and its bookmark stays before them."""
    lost, kept = f"ll-{unique}{{shard-1}}", f"ll-{unique}{{shard-2}}"
    for key in (lost, kept):
        for n in range(3):
            redis_client.xadd(key, {"table": "t", "id": str(n)})
    out = io.BytesIO()
    reader = _in_process_reader(redis_url, [lost, kept], out, lock_ttl_ms=3000)
    real_read = reader.client.read
    reads = []

    def slow_read(cursors: Any, count: int, block_ms: int | None = None) -> Any:
        batch = real_read(cursors, count, block_ms)
        reads.append(sorted(k for k, _ in batch))
        if len(reads) == 1:
            time.sleep(1.1)  # past a third of the TTL: the lock is checked again
            # The lost key's lock expired meanwhile and the drainer took it.
            redis_client.set(f"{lost}_lock", "LOCKED", px=60_000)
        return batch

    reader.client.read = slow_read  # type: ignore[method-assign]
    reader.run()
    records, state = _records_and_last_state(out)
    assert reads[0] == sorted([lost, kept])  # the read returned both keys' entries
    assert records == [(kept, "0"), (kept, "1"), (kept, "2")]
    assert lost not in state["stream_ids"]
    assert redis_client.get(f"{lost}_lock") == b"LOCKED"  # the drainer's, untouched

    redis_client.delete(f"{lost}_lock")  # the drainer finished its batch
    again = io.BytesIO()
    _in_process_reader(redis_url, [lost, kept], again, lock_ttl_ms=3000, state=state).run()
    assert _records_and_last_state(again)[0] == [(lost, "0"), (lost, "1"), (lost, "2")]


def test_follow_reads_a_key_created_after_the_start_from_its_first_entry(
    redis_url, redis_client, unique, monkeypatch
):
    """`start_from: latest` skips what keys held at the start; a key created
    later holds only new entries, all of which are read (also those written
    before the tap noticed the key)."""
    monkeypatch.setattr(reader_module, "RESOLVE_EVERY_SECONDS", 0.2)
    old, new = f"fl-{unique}{{shard-1}}", f"fl-{unique}{{shard-2}}"
    redis_client.xadd(old, {"table": "t", "id": "before"})
    out = io.BytesIO()
    deadline = time.monotonic() + 10

    def stop() -> bool:
        seen = out.getvalue()
        return (b'"after"' in seen and b'"new-2"' in seen) or time.monotonic() > deadline

    reader = _in_process_reader(
        redis_url,
        [f"fl-{unique}{{shard-*}}"],
        out,
        stop_requested=stop,
        follow=True,
        start_from="latest",
        heartbeat_seconds=0.1,
    )
    real_read = reader.client.read
    reads = 0

    def read(cursors: Any, count: int, block_ms: int | None = None) -> Any:
        nonlocal reads
        reads += 1
        if reads == 2:  # the tap runs: a new key gets two entries before it is found
            redis_client.xadd(new, {"table": "t", "id": "new-1"})
            redis_client.xadd(new, {"table": "t", "id": "new-2"})
            redis_client.xadd(old, {"table": "t", "id": "after"})
        return real_read(cursors, count, block_ms)

    reader.client.read = read  # type: ignore[method-assign]
    reader.run()
    records, _ = _records_and_last_state(out)
    assert sorted(records) == sorted([(old, "after"), (new, "new-1"), (new, "new-2")])


@pytest.mark.parametrize("fmt", ["euler_kv", "fields"])
def test_an_entry_with_a_repeated_field_name_is_refused_and_dead_lettered_whole(
    tmp_path, redis_url, redis_client, unique, fmt
):
    """Redis takes `XADD k * command A command B`; as a dict the entry would keep
    only B, and A's row would vanish without a word."""
    key, failed = f"dup-{unique}", f"failed-{unique}"
    good = {"command": orjson.dumps(SPEC_CREATE)} if fmt == "euler_kv" else {"table": "t", "a": "1"}
    redis_client.xadd(key, good)
    flat: list[bytes] = (
        [b"command", orjson.dumps(SPEC_CREATE), b"command", b"second"]
        if fmt == "euler_kv"
        else [b"table", b"t", b"a", b"1", b"a", b"2"]
    )
    bad = redis_client.execute_command("XADD", key, "*", *flat).decode()
    last = redis_client.xadd(key, good).decode()
    extra = {} if fmt == "euler_kv" else {"entry_format": "fields", "table_field": "table"}
    stopped = run_tap(tmp_path, config(redis_url, key, **extra))
    assert stopped.returncode != 0
    repeated = "'command'" if fmt == "euler_kv" else "'a'"
    assert f"stream {key!r}, entry {bad}: field name(s) {repeated} occur more" in stopped.stderr
    assert len(stopped.records) == 1

    run = run_tap(
        tmp_path,
        config(redis_url, key, on_parse_error="dead_letter", failed_stream=failed, **extra),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.records) == 2
    assert run.states[-1] == {"stream_ids": {key: last}}
    raw = redis_lib.Redis.from_url(redis_url)
    raw.set_response_callback("XRANGE", lambda reply, **_: reply)  # fields as sent, repeats too
    letters: Any = raw.xrange(failed)
    raw.close()
    [(_, letter)] = letters
    assert letter[:6:2] == [b"source_stream", b"source_entry_id", b"reason"]
    assert letter[6::2] == [b"field:" + name for name in flat[::2]]
    assert letter[7::2] == flat[1::2]


def test_a_listed_key_that_is_not_a_stream_stops_the_tap_naming_it(
    tmp_path, redis_url, redis_client, unique
):
    stream, other = f"w-{unique}", f"w-{unique}-hash"
    redis_client.xadd(stream, {"command": orjson.dumps(SPEC_CREATE)})
    redis_client.hset(other, "a", "1")
    run = run_tap(tmp_path, config(redis_url, stream, other))
    assert run.returncode != 0
    assert f"stream_keys names {other!r}, which holds a hash, not a stream" in run.stderr
    assert "Traceback" not in run.stderr
    missing = run_tap(tmp_path, config(redis_url, stream, f"w-{unique}-not-yet"))
    assert missing.returncode == 0, missing.stderr[-2000:]  # absent: nothing to read yet
    assert len(missing.records) == 1


def test_a_bounded_run_ends_at_the_entries_its_keys_had_when_it_started(
    redis_url, redis_client, unique
):
    """Entries keep arriving while a scheduled (bounded) run reads: it still
    ends, at the last entry each key had when it started."""
    key = f"b-{unique}"
    first = [redis_client.xadd(key, {"table": "t", "id": str(n)}).decode() for n in range(25)]
    out = io.BytesIO()
    reader = _in_process_reader(redis_url, [key], out, read_count=10)
    real_read = reader.client.read

    def read(cursors: Any, count: int, block_ms: int | None = None) -> Any:
        for n in range(20):  # a busy stream: more than a read takes
            redis_client.xadd(key, {"table": "t", "id": f"late-{n}"})
        return real_read(cursors, count, block_ms)

    reader.client.read = read  # type: ignore[method-assign]
    reader.run()
    records, state = _records_and_last_state(out)
    assert [entry for _, entry in records] == [str(n) for n in range(25)]
    assert state == {"stream_ids": {key: first[-1]}}
    assert redis_client.xlen(key) > 25  # the late entries are there, for the next run


def test_an_unreachable_redis_at_start_fails_at_once_without_the_password(tmp_path):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    run = run_tap(tmp_path, config(f"redis://drainer:S3CRETPW@127.0.0.1:{port}/0", "k"))
    assert run.returncode != 0
    assert time.monotonic() - started < 20  # no reconnect loop: it never connected
    assert f"cannot use redis_url: Redis at redis://drainer@127.0.0.1:{port}/0" in run.stderr
    assert "S3CRETPW" not in run.stderr
    assert run.messages == []


def test_a_tap_stopping_on_a_bad_entry_releases_its_shard_locks(
    tmp_path, redis_url, redis_client, unique
):
    keys = [f"rl-{unique}{{shard-{n}}}" for n in range(3)]
    for key in keys:
        redis_client.xadd(key, {"command": orjson.dumps(SPEC_CREATE)})
    redis_client.xadd(keys[1], {"command": b"not json"})
    run = run_tap(tmp_path, config(redis_url, f"rl-{unique}{{shard-*}}", shard_locks=True))
    assert run.returncode != 0
    assert "cannot decode" in run.stderr
    assert "Released 3 of 3 shard lock(s)" in run.stderr
    assert [k for k in keys if redis_client.exists(f"{k}_lock")] == []


def test_a_lock_ttl_shorter_than_three_follow_rounds_is_refused(tmp_path, redis_url, unique):
    # A follow round may block heartbeat_seconds: a lock could expire within one.
    settings = {"follow": True, "shard_locks": True, "heartbeat_seconds": 1}
    run = run_tap(tmp_path, config(redis_url, f"t-{unique}", shard_lock_ttl_ms=2999, **settings))
    assert run.returncode != 0
    assert "shard_lock_ttl_ms 2999 must be at least 3 x heartbeat_seconds (1 s)" in run.stderr
    assert run.messages == []
