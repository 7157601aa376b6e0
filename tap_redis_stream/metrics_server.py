"""What a long-running worker exposes: Prometheus metrics and a health check.

`TapMetrics` always counts (cheaply, per batch); with `metrics_port` set, an
HTTP server on `metrics_host:metrics_port` (127.0.0.1 by default) serves
`/metrics` (Prometheus text format) and `/healthz` (200 while the reader loop
is alive, 503 once it stalled or ended). Lag gauges are only computed while the
server runs: they cost one XINFO per key per `LAG_REFRESH_SECONDS`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from singer_sdk import metrics as sdk_metrics

logger = logging.getLogger(__name__)

PREFIX = "tap_redis_stream"


class TapMetric(StrEnum):
    """SDK-style `METRIC:` log lines of the tap (the SDK accepts a custom str Enum)."""

    SHARD_LOCK_SKIPPED = "shard_lock_skipped"
    SHARD_LOCK_LOST = "shard_lock_lost"


LAG_REFRESH_SECONDS = 1.0
STALL_SECONDS_MIN = 60.0

_Start = Callable[[str, list[tuple[str, str]]], Any]


class TapMetrics:
    """The tap's counters and gauges (one registry per tap run)."""

    def __init__(self, *, heartbeat_seconds: float = 5.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.entries_read = Counter(
            f"{PREFIX}_entries_read", "Stream entries read", ["stream_key"], registry=r
        )
        self.records_written = Counter(
            f"{PREFIX}_records_written", "RECORD messages written", ["stream_key"], registry=r
        )
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters",
            "Undecodable entries moved to failed_stream",
            ["stream_key"],
            registry=r,
        )
        self.batch_entries = Histogram(
            f"{PREFIX}_read_batch_entries",
            "Entries returned by one read (all keys)",
            buckets=(1, 10, 100, 1_000, 10_000, 100_000),
            registry=r,
        )
        self.read_seconds = Histogram(
            f"{PREFIX}_read_seconds",
            "Duration of a read that returned entries (XREAD, or one pipelined round in a cluster)",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=r,
        )
        self.state_messages = Counter(
            f"{PREFIX}_state_messages", "STATE messages written", registry=r
        )
        self.lag_entries = Gauge(
            f"{PREFIX}_lag_entries",
            "Entries of the key after this worker's bookmark (XINFO STREAM; see lag.py)",
            ["stream_key"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            f"{PREFIX}_lag_seconds",
            "Milliseconds part of the newest entry ID minus the bookmark's, in seconds",
            ["stream_key"],
            registry=r,
        )
        self.owned_keys = Gauge(
            f"{PREFIX}_owned_stream_keys", "Stream keys this worker owns", registry=r
        )
        self.held = Gauge(f"{PREFIX}_shard_locks_held", "Shard locks held now", registry=r)
        self.skips = Counter(
            f"{PREFIX}_shard_lock_skips",
            "Rounds a key was skipped because another owner held its lock",
            ["stream_key"],
            registry=r,
        )
        self.lost = Counter(
            f"{PREFIX}_shard_locks_lost",
            "Locks that expired or were taken while held",
            ["stream_key"],
            registry=r,
        )
        self.reconnect_attempts = Counter(
            f"{PREFIX}_redis_reconnect_attempts",
            "Failed Redis calls retried with backoff",
            registry=r,
        )
        self.connected = Gauge(
            f"{PREFIX}_redis_connected", "1 while Redis answers, 0 while retrying", registry=r
        )
        self.connected.set(1)
        self._sdk_logger = sdk_metrics.get_metrics_logger()
        self.stall_seconds = max(STALL_SECONDS_MIN, 4 * heartbeat_seconds)
        self._tick = time.monotonic()
        self.running = False
        self.status = "starting"

    # -- reader events ---------------------------------------------------------

    def tick(self, status: str = "running") -> None:
        """The reader loop is alive."""
        self._tick = time.monotonic()
        self.status = status

    def started(self) -> None:
        self.running = True
        self.tick()

    def stopped(self) -> None:
        self.running = False
        self.status = "stopped"

    def read(self, entries: int, seconds: float) -> None:
        if entries:
            self.batch_entries.observe(entries)
            self.read_seconds.observe(seconds)

    def key_done(self, key: str, entries: int, records: int) -> None:
        if entries:
            self.entries_read.labels(key).inc(entries)
        if records:
            self.records_written.labels(key).inc(records)

    def dead_letter(self, key: str) -> None:
        self.dead_letters.labels(key).inc()

    def keys(self, keys: Iterable[str]) -> None:
        self.owned_keys.set(len(list(keys)))

    def set_lag(self, key: str, entries: int, seconds: float) -> None:
        self.lag_entries.labels(key).set(entries)
        self.lag_seconds.labels(key).set(seconds)

    def reconnecting(self, attempt: int) -> None:
        self.reconnect_attempts.inc()
        self.connected.set(0)
        self.tick("reconnecting")

    def reconnected(self) -> None:
        self.connected.set(1)
        self.tick()

    # -- lock events (locks.LockEvents) ----------------------------------------

    def lock_skipped(self, key: str, holder: str) -> None:
        self.skips.labels(key).inc()
        self._log(TapMetric.SHARD_LOCK_SKIPPED, stream_key=key, holder=holder)

    def lock_lost(self, key: str) -> None:
        self.lost.labels(key).inc()
        self._log(TapMetric.SHARD_LOCK_LOST, stream_key=key)

    def _log(self, metric: TapMetric, **tags: Any) -> None:
        point: sdk_metrics.Point[Any] = sdk_metrics.Point("counter", metric, 1, tags)  # type: ignore[arg-type]
        sdk_metrics.log(self._sdk_logger, point)

    def locks_held(self, count: int) -> None:
        self.held.set(count)

    # -- health ----------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        if not self.running:
            return False, self.status
        idle = time.monotonic() - self._tick
        if idle > self.stall_seconds:
            return False, f"stalled: reader loop silent for {idle:.0f} s"
        return True, self.status


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not log lines."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class MetricsServer:
    """`/metrics` and `/healthz` over HTTP in a daemon thread."""

    def __init__(self, metrics: TapMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        self._prometheus = make_wsgi_app(metrics.registry)
        self._httpd = make_server(
            host, port, self._app, _ThreadingServer, handler_class=_QuietHandler
        )
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="tap-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        logger.info("Metrics on http://%s:%d/metrics, health on /healthz", self.host, self.port)

    def _app(self, environ: dict[str, Any], start_response: _Start) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok, status = self.metrics.health()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8")],
            )
            return [f"{'ok' if ok else 'unhealthy'}: {status}\n".encode()]
        return self._prometheus(environ, start_response)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
