"""Shared test fixtures: real databases and a real Redis, never mocks.

Fixtures for everyone (relay, admin, accounting, store tests):

``database_url`` (function scope, parametrized ``[sqlite]`` / ``[postgresql]``)
    A fresh, empty database for one test, as a SQLAlchemy async URL. SQLite is a file in ``tmp_path``;
    PostgreSQL is ``CREATE DATABASE test_<random>`` on the throwaway server, dropped after the test.
    The schema is NOT created: run ``isthmus.store.migrations.upgrade_database(url)`` (or use the
    ``migrated_database_url`` fixture) when the test needs tables. A test using it runs twice; select
    one database with ``-k sqlite`` or ``-k postgresql``.
``migrated_database_url``
    Same, with the schema migrated to head.
``postgres_url`` (session)
    ``postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres`` of a throwaway server (superuser, trust
    auth), started on first use. Prefer ``database_url`` for isolation; use this for server-level needs.
``redis_url`` (session)
    ``redis://127.0.0.1:PORT/0`` of a throwaway ``redis-server`` (no persistence), started on first use.
``clean_redis_url`` (function)
    ``redis_url`` after ``FLUSHDB``, for tests that must start from an empty Redis.

``ISTHMUS_TEST_POSTGRES_URL`` / ``ISTHMUS_TEST_REDIS_URL`` replace the throwaway servers with existing
ones. The machine's system services (5432, 6379) are never used otherwise. A service that cannot be
started fails the tests that need it (never skips them) with a message saying why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import (
    POSTGRES_URL_ENV,
    REDIS_URL_ENV,
    ServiceError,
    ThrowawayPostgres,
    ThrowawayRedis,
    create_database,
    drop_database,
    run_async_in_thread,
    started,
    wait_for_postgres,
    wait_for_redis,
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    env_url = os.environ.get(POSTGRES_URL_ENV)
    if env_url:
        try:
            wait_for_postgres(env_url)
        except ServiceError as exc:
            pytest.fail(f"{POSTGRES_URL_ENV} is set but unusable: {exc}", pytrace=False)
        yield env_url
        return
    with started(ThrowawayPostgres, "a throwaway PostgreSQL for the tests", wait_for_postgres) as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    env_url = os.environ.get(REDIS_URL_ENV)
    if env_url:
        try:
            wait_for_redis(env_url)
        except ServiceError as exc:
            pytest.fail(f"{REDIS_URL_ENV} is set but unusable: {exc}", pytrace=False)
        yield env_url
        return
    with started(ThrowawayRedis, "a throwaway Redis for the tests") as server:
        yield server.url


@pytest.fixture
def clean_redis_url(redis_url: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{(tmp_path / 'isthmus-test.db').as_posix()}"
        return
    # Looked up here, not declared as a parameter, so SQLite-only runs never start PostgreSQL.
    server_url: str = request.getfixturevalue("postgres_url")
    url = create_database(server_url)
    try:
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    from isthmus.store.migrations import upgrade_database

    run_async_in_thread(lambda: upgrade_database(database_url))
    return database_url
