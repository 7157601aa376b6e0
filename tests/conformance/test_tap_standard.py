"""The singer-sdk standard tap suite against a seeded real Redis.

The SDK instantiates and discovers the tap while collecting, so the stream keys
are seeded here, at import, through the session's (lazily started) Redis.
"""

from __future__ import annotations

import uuid

import redis as redis_lib
from singer_sdk.testing import get_tap_test_class

from tap_redis_stream.tap import TapRedisStream
from tests import kv_workload
from tests.conftest import session_servers

BASE = f"conformance-{uuid.uuid4().hex[:8]}"


def _seed() -> str:
    url = session_servers().redis.url
    client = redis_lib.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for entry in kv_workload.creates(100, seed=21, stream_base=BASE, shards=2, compress=True):
        pipe.xadd(entry.stream_key, {"command": entry.payload})
    pipe.execute()
    client.close()
    return url


TestTapRedisStream = get_tap_test_class(
    TapRedisStream,
    config={"redis_url": _seed(), "stream_keys": [f"{BASE}{{shard-*}}"]},
)
