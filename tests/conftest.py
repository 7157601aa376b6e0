"""Shared test harness: real servers, started once per session, stopped at the end.

Servers start lazily on first use (so a unit-only run starts none) and are also
reachable at collection time through `session_servers()` — the singer-sdk
standard tap suite instantiates the tap while collecting. Set TEST_POSTGRES_URL,
TEST_REDIS_URL or TEST_KAFKA_BOOTSTRAP_SERVERS to use existing servers instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib
from psycopg import sql

from tests.servers import (
    Cluster,
    Server,
    kafka_from_env_or_start,
    postgres_from_env_or_start,
    redis_cluster_from_env_or_start,
    redis_from_env_or_start,
    start_kafka,
)


class SessionServers:
    """Starts each server at most once; stops what it started."""

    def __init__(self) -> None:
        self._servers: dict[str, Server] = {}

    def _get(self, name: str) -> Server:
        if name not in self._servers:
            factory = {
                "postgres": postgres_from_env_or_start,
                "redis": redis_from_env_or_start,
                "kafka": kafka_from_env_or_start,
            }[name]
            self._servers[name] = factory()
        return self._servers[name]

    @property
    def postgres(self) -> Server:
        return self._get("postgres")

    @property
    def redis(self) -> Server:
        return self._get("redis")

    @property
    def kafka(self) -> Server:
        return self._get("kafka")

    def stop_all(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


_SESSION = SessionServers()


def session_servers() -> SessionServers:
    return _SESSION


def pytest_unconfigure(config: pytest.Config) -> None:
    _SESSION.stop_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/unit/" not in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg_url() -> str:
    return _SESSION.postgres.url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _SESSION.redis.url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _SESSION.kafka.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A 3-primary Redis Cluster (or TEST_REDIS_CLUSTER_URL), started on first use."""
    cluster = redis_cluster_from_env_or_start()
    yield cluster
    cluster.stop()


@pytest.fixture
def dedicated_kafka() -> Iterator[Server]:
    """A broker of this test's own, which the test may kill."""
    server = start_kafka()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_conn(pg_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def pg_schema(pg_conn: psycopg.Connection) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    pg_conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def unique() -> str:
    """A short unique token for key, topic and table names of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def data_dir() -> Path:
    return Path(__file__).parent / "data"
