"""Shared fixtures: a fresh database per test, on SQLite and on PostgreSQL.

PostgreSQL is found through TEST_POSTGRES_URL (default: the local server). When none answers, the
PostgreSQL variants are skipped with that reason; with REQUIRE_POSTGRES=1 (as `.ci/run` sets) they
fail instead, so CI can never pass without them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from store import search
from store.db import make_engine, make_sessionmaker
from store.migrate import stamp_head
from store.models import Base

TEST_POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"

# Bolt reads these implicitly; a developer's shell must not change what the tests see.
for _var in (
    "SLACK_CLIENT_ID",
    "SLACK_CLIENT_SECRET",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "https_proxy",
    "http_proxy",
    "ANTHROPIC_API_KEY",
):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"

_postgres_reason: str | None = None
_postgres_checked = False


def postgres_unavailable() -> str | None:
    """None when PostgreSQL answers, else why not (checked once per process)."""
    global _postgres_checked, _postgres_reason
    if _postgres_checked:
        return _postgres_reason
    _postgres_checked = True

    async def probe() -> None:
        engine = make_engine(TEST_POSTGRES_URL)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(asyncio.wait_for(probe(), timeout=5))
    except Exception as exc:  # any failure means "no PostgreSQL here"
        _postgres_reason = (
            f"PostgreSQL not reachable at TEST_POSTGRES_URL ({type(exc).__name__}: {exc})"
        )
    return _postgres_reason


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any("postgres" in item.keywords for item in items):
        return
    reason = postgres_unavailable()
    if reason is None:
        return
    if REQUIRE_POSTGRES:
        raise pytest.UsageError(f"REQUIRE_POSTGRES=1 but {reason}")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


class TestDatabase:
    __test__ = False  # a fixture's value, not a test class

    """A database of one test: its URL (for a subprocess), search path and engine."""

    def __init__(self, kind: str, url: str, schema: str | None, engine: AsyncEngine) -> None:
        self.kind = kind
        self.url = url
        self.schema = schema
        self.engine = engine
        self.sessionmaker = make_sessionmaker(engine)

    def new_engine(self, pool_size: int = 5) -> AsyncEngine:
        return make_engine(self.url, pool_size=pool_size, search_path=self.schema)


async def _new_database(kind: str, tmp_path: Path) -> TestDatabase:
    """An empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        return TestDatabase(kind, url, None, make_engine(url))
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = make_engine(TEST_POSTGRES_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    await admin.dispose()
    engine = make_engine(TEST_POSTGRES_URL, pool_size=5, search_path=schema)
    return TestDatabase(kind, TEST_POSTGRES_URL, schema, engine)


async def _drop_database(db: TestDatabase) -> None:
    await db.engine.dispose()
    if db.schema:
        admin = make_engine(TEST_POSTGRES_URL)
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=DATABASES)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TestDatabase]:
    """A fresh database with the schema, on each backend."""
    db = await _new_database(request.param, tmp_path)
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.run_sync(search.install)  # the FTS objects of migration 0002
        await conn.run_sync(stamp_head)
    try:
        yield db
    finally:
        await _drop_database(db)


@pytest.fixture(params=DATABASES)
async def empty_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[TestDatabase]:
    """A fresh database with no tables at all (for migration tests)."""
    db = await _new_database(request.param, tmp_path)
    try:
        yield db
    finally:
        await _drop_database(db)


class RunningApp:
    """The real app (`app.build` + `app.build_web_app`) served on a free loopback port."""

    def __init__(self, services, runner, base_url: str) -> None:
        self.services = services
        self.runner = runner
        self.base_url = base_url

    @property
    def settings(self):
        return self.services.settings

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.services.runner.shutdown(timeout=5)
        await self.services.engine.dispose()


async def start_app(database: TestDatabase, *, engine: AsyncEngine | None = None, **overrides):
    """Start the whole app on `database` with settings `overrides` (lower-case Settings fields,
    plus `runtime=`, `lease_seconds=`, `recover_every=`)."""
    from aiohttp import web

    import app as app_module

    build_kwargs = {
        k: overrides.pop(k) for k in ("runtime", "lease_seconds", "recover_every") if k in overrides
    }
    settings = app_module.Settings(
        _env_file=None, database_url=database.url, host="127.0.0.1", port=0, **overrides
    )
    services = await app_module.build(
        settings,
        engine=engine or database.new_engine(pool_size=6),
        search_path=database.schema,
        **build_kwargs,
    )
    web_app = app_module.build_web_app(services)
    runner = web.AppRunner(web_app, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return RunningApp(services, runner, f"http://127.0.0.1:{port}")


FAKE_API_KEY = "sk-ant-test"


@pytest.fixture
async def fake_runtime():
    """The fake managed-agents API on a free loopback port (the real SDK talks to it)."""
    from tests.fakes.anthropic_api import FakeAnthropic

    async with FakeAnthropic(api_key=FAKE_API_KEY) as fake:
        yield fake
