"""Redis I/O for the tap: key resolution, reads, trimming, failed entries, stream info.

Only this module (and `locks`, which runs its scripts on `StreamClient.raw`)
talks to redis-py. It works against one Redis server or a Redis Cluster: in a
cluster, SCAN visits every primary, and since one XREAD may not span hash
slots, each key is read on its own (one pipelined round trip per node); redis-py
follows MOVED/ASK redirections. Connection-level failures surface as
`RedisUnavailable` (retry with backoff); anything else is a real error.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis import exceptions as rexc
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from tap_redis_stream.entry_id import MAX_ID, EntryId, parse_reply_id

logger = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")
SCAN_COUNT = 1000
SOCKET_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
# A cluster cannot block on keys of several slots at once: when every key is
# idle, follow mode polls them this often instead (one pipelined round trip per node).
CLUSTER_POLL_SECONDS = 0.1
COUNT_PAGE = 500
REDIS_MODES = ("auto", "standalone", "cluster")

Entries = list[tuple[EntryId, dict[bytes, bytes]]]
Batch = list[tuple[str, Entries]]


class RedisUnavailable(Exception):
    """Redis cannot be reached right now (refused, reset, timed out, loading, cluster down)."""


class RedisRefused(Exception):
    """Redis answered but will not serve us (wrong password, bad URL option): do not retry."""


def safe_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def is_pattern(key: str) -> bool:
    """A glob pattern (`*`, `?`, `[`); `{shard-1}` hash tags alone are literal names."""
    return any(ch in _GLOB_CHARS for ch in key)


def owns(key: str, shard_index: int, shard_count: int) -> bool:
    """Stable assignment of a key to one of `shard_count` workers."""
    return zlib.crc32(key.encode()) % shard_count == shard_index


def _transient(exc: Exception) -> bool:
    if isinstance(exc, rexc.AuthenticationError | rexc.AuthorizationError):
        return False
    if isinstance(
        exc,
        rexc.ConnectionError  # refused, reset, LOADING (BusyLoadingError)
        | rexc.TimeoutError
        | rexc.ClusterDownError  # includes MASTERDOWN
        | rexc.TryAgainError
        | rexc.ReadOnlyError  # a failover in progress
        | rexc.SlotNotCoveredError,
    ):
        return True
    # redis-py raises the bare RedisClusterException when no node answers.
    return isinstance(exc, rexc.RedisClusterException) and "connect" in str(exc).lower()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DuplicateFields(dict[bytes, bytes]):
    """An entry whose field names repeat (Redis takes `XADD k * a 1 a 2`).

    As a dict it holds the last value of each name, like redis-py's own
    reply; `pairs` keeps every field in order. The reader refuses such an
    entry (a parse error: which value would be the column's?), and a dead
    letter copies all of its fields.
    """

    pairs: list[tuple[bytes, bytes]]

    @classmethod
    def from_flat(cls, flat: Sequence[bytes]) -> DuplicateFields:
        fields = cls(zip(flat[::2], flat[1::2], strict=True))
        fields.pairs = list(zip(flat[::2], flat[1::2], strict=True))
        return fields

    def repeated(self) -> list[str]:
        """The names that occur more than once, as text."""
        names = [name for name, _ in self.pairs]
        return sorted({_text(n) for n in names if names.count(n) > 1})


def _fields(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """An entry's flat [field, value, ...] list as a dict; see DuplicateFields."""
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return fields if 2 * len(fields) == len(flat) else DuplicateFields.from_flat(flat)


def _xread_reply(response: Any, **options: Any) -> Batch:
    """XREAD's reply as the tap's batch, in one pass: its own client's callback.

    redis-py's callback builds a dict per entry through a generic helper, then
    the batch would be built from that. RESP2 replies with a list of [key,
    entries], RESP3 with a map; each entry is [id, [field, value, ...]].
    """
    if not response:
        return []
    try:
        return _batch(response, parse_reply_id)
    except ValueError:
        return _batch(response, EntryId.parse)  # raises, naming the ID that is not one


def _batch(response: Any, parse: Callable[[bytes], EntryId]) -> Batch:
    return [
        (
            _text(key),
            [(parse(i), {f[0]: f[1]} if len(f) == 2 else _fields(f)) for i, f in entries],
        )
        for key, entries in (response.items() if isinstance(response, dict) else response)
    ]


def _key_text(key: Any, pattern: str) -> str:
    try:
        return _text(key)
    except UnicodeDecodeError:
        raise SystemExit(
            f"tap-redis-stream: stream key {key!r} (matching {pattern!r}) is not UTF-8, so it "
            "cannot be named in Singer messages or state: rename it or narrow the pattern"
        ) from None


class StreamClient:
    """Reads Redis stream keys in entry-ID order, on one server or a cluster.

    `mode`: `standalone`, `cluster`, or `auto` (asks the server `INFO cluster`
    when it connects). Nothing is sent before `connect()`.
    """

    def __init__(self, url: str, *, mode: str = "auto", block_timeout_seconds: float = 0) -> None:
        if mode not in REDIS_MODES:
            raise ValueError(f"redis_mode must be one of {', '.join(REDIS_MODES)}, not {mode!r}")
        self.url = url
        self.display_url = safe_url(url)
        self._mode = mode
        self._options: dict[str, Any] = {
            "socket_timeout": SOCKET_TIMEOUT_SECONDS + block_timeout_seconds,
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "health_check_interval": 30,
            # One immediate retry (a stale pooled connection); longer outages are the
            # reader's backoff (reconnect.py), which logs each attempt.
            "retry": Retry(NoBackoff(), 1),
        }
        self._redis: Any = None
        self.cluster = False

    # -- connection ---------------------------------------------------------

    def connect(self) -> None:
        """Connect (detecting a cluster in `auto` mode) and PING; errors name the URL."""
        try:
            self._redis = self._open()
            self._redis.ping()
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            self.close()
            error = RedisUnavailable if _transient(exc) else RedisRefused
            raise error(f"Redis at {self.display_url}: {type(exc).__name__}: {exc}") from exc

    def _open(self) -> Any:
        cluster = self._mode == "cluster"
        if self._mode == "auto":
            probe = redis.Redis.from_url(self.url, **self._options)
            try:
                cluster = self._cluster_enabled(probe)
            finally:
                probe.close()
        self.cluster = cluster
        if cluster:
            return RedisCluster.from_url(self.url, **self._options)
        client = redis.Redis.from_url(self.url, **self._options)
        client.set_response_callback("XREAD", _xread_reply)
        return client

    def _cluster_enabled(self, probe: redis.Redis) -> bool:
        try:
            info: Any = probe.info("cluster")
        except rexc.ResponseError as exc:  # not permitted for this user, or a proxy without it
            logger.warning(
                "INFO cluster failed on %s (%s): assuming a single Redis server "
                "(set redis_mode: cluster for a cluster)",
                self.display_url,
                exc,
            )
            return False
        return bool(int(info.get("cluster_enabled", 0)))

    @property
    def raw(self) -> Any:
        """The redis-py client (Redis or RedisCluster), for `locks`."""
        if self._redis is None:
            self.connect()
        return self._redis

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One redis-py call; connection-level failures become RedisUnavailable."""
        try:
            return getattr(self.raw, method)(*args, **kwargs)
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            raise self.translate(exc) from exc

    def script(self, source: str) -> Callable[[list[str], list[Any]], Any]:
        """A Lua script registered with redis-py (EVALSHA, loaded again after a restart)."""
        registered = self.raw.register_script(source)

        def run(keys: list[str], args: list[Any]) -> Any:
            try:
                return registered(keys=keys, args=args)
            except (rexc.RedisError, rexc.RedisClusterException) as exc:
                raise self.translate(exc) from exc

        return run

    def translate(self, exc: Exception) -> Exception:
        if _transient(exc):
            return RedisUnavailable(f"Redis at {self.display_url}: {type(exc).__name__}: {exc}")
        return exc

    def ping(self) -> None:
        if self._redis is None:
            self.connect()
        else:
            self.call("ping")

    # -- keys and entries ---------------------------------------------------

    def resolve(self, names: Iterable[str]) -> list[str]:
        """Literal keys as given; patterns expanded with SCAN over stream keys
        (on every primary of a cluster). Sorted."""
        keys: set[str] = set()
        for name in names:
            if not is_pattern(name):
                kind = _text(self.call("type", name))
                if kind not in ("stream", "none"):  # none: not there yet, read once it is
                    raise SystemExit(
                        f"tap-redis-stream: stream_keys names {name!r}, which holds a {kind}, "
                        "not a stream: remove it from stream_keys"
                    )
                keys.add(name)
                continue
            found = self.call("scan_iter", match=name, count=SCAN_COUNT, _type="stream")
            try:
                keys.update(_key_text(key, name) for key in found)
            except (rexc.RedisError, rexc.RedisClusterException) as exc:
                raise self.translate(exc) from exc
        return sorted(keys)

    def last_id(self, key: str) -> EntryId | None:
        """ID of the key's last entry now, or None when it is empty or missing."""
        newest: Any = self.call("xrevrange", key, count=1)
        return EntryId.parse(newest[0][0]) if newest else None

    def sample(self, key: str, count: int) -> Entries:
        """The key's first `count` entries (for discovery)."""
        entries: Any = self.call("xrange", key, count=count)
        return [(EntryId.parse(i), dict(f)) for i, f in entries]

    def read(
        self, cursors: Mapping[str, EntryId], count: int, block_ms: int | None = None
    ) -> Batch:
        """Entries after each cursor (XREAD), up to `count` per key, in ID order.

        With `block_ms`, waits up to that long for the first new entry."""
        if not cursors:
            return []
        if self.cluster:
            return self._read_cluster(cursors, count, block_ms)
        streams: dict[Any, Any] = {key: str(cursor) for key, cursor in cursors.items()}
        batch: Batch = self.call("xread", streams, count=count, block=block_ms)
        return batch

    def _read_cluster(
        self, cursors: Mapping[str, EntryId], count: int, block_ms: int | None
    ) -> Batch:
        deadline = time.monotonic() + (block_ms or 0) / 1000
        while True:
            batch = self._read_each(cursors, count)
            remaining = deadline - time.monotonic()
            if batch or block_ms is None or remaining <= 0:
                return batch
            time.sleep(min(CLUSTER_POLL_SECONDS, remaining))

    def _read_each(self, cursors: Mapping[str, EntryId], count: int) -> Batch:
        """One XREAD per key, pipelined: redis-py groups them by node."""
        keys = list(cursors)
        try:
            pipe = self.raw.pipeline(transaction=False)
            for key in keys:
                pipe.xread({key: str(cursors[key])}, count=count)
            replies: list[Any] = pipe.execute()
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            raise self.translate(exc) from exc
        batch: Batch = []
        for reply in replies:
            # redis-py's own reply on a cluster: fields as a dict already, so a
            # repeated field name shows only its last value (see DuplicateFields).
            for key, entries in reply or []:
                batch.append((_text(key), [(EntryId.parse(i), dict(f)) for i, f in entries]))
        return batch

    def stream_info(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """XINFO STREAM of each key that exists (pipelined)."""
        if not keys:
            return {}
        try:
            pipe = self.raw.pipeline(transaction=False)
            for key in keys:
                pipe.xinfo_stream(key)
            replies: list[Any] = pipe.execute(raise_on_error=False)
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            raise self.translate(exc) from exc
        infos: dict[str, dict[str, Any]] = {}
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, Exception):
                if _transient(reply):
                    raise self.translate(reply)
                continue  # no such key (yet): no lag to report
            infos[key] = reply
        return infos

    def count_entries(self, key: str, start: str, end: str, limit: int) -> int:
        """Entries in [start, end] (XRANGE syntax, `(` excludes), counting at most `limit`."""
        seen = 0
        while seen < limit:
            page: Any = self.call("xrange", key, min=start, max=end, count=COUNT_PAGE)
            seen += len(page)
            if len(page) < COUNT_PAGE:
                break
            start = "(" + _text(page[-1][0])
        return min(seen, limit)

    # -- writes -------------------------------------------------------------

    def trim_through(self, key: str, bookmark: EntryId) -> int:
        """Delete entries with ID <= bookmark (XTRIM MINID removes IDs below its argument)."""
        if bookmark == MAX_ID:  # nothing can follow it: every entry is at or below it
            return int(self.call("xtrim", key, maxlen=0, approximate=False))
        return int(self.call("xtrim", key, minid=str(bookmark.next()), approximate=False))

    def dead_letter(
        self,
        failed_stream: str,
        key: str,
        entry_id: EntryId,
        reason: str,
        fields: Mapping[bytes, bytes],
    ) -> None:
        """XADD the raw entry with where it came from and why it failed."""
        payload: dict[Any, Any] = {
            "source_stream": key,
            "source_entry_id": str(entry_id),
            "reason": reason,
        }
        if isinstance(fields, DuplicateFields):
            # Every field, repeated names included, which a dict cannot hold.
            flat = [part for pair in payload.items() for part in pair]
            flat += [part for name, value in fields.pairs for part in (b"field:" + name, value)]
            self.call("execute_command", "XADD", failed_stream, "*", *flat)
            return
        for name, value in fields.items():
            payload[b"field:" + name] = value
        self.call("xadd", failed_stream, payload)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
