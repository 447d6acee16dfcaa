"""Which database failures leave work to be taken up again (a turn is abandoned to the next
runner) and which are failures of the work itself (reported once)."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from store.db import is_unavailable, make_engine
from tests.conftest import TestDatabase


async def test_a_unique_violation_is_not_an_outage(database: TestDatabase) -> None:
    async with database.engine.connect() as conn:
        await conn.execute(text("CREATE TEMPORARY TABLE t (id INTEGER PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(sa_exc.IntegrityError) as caught:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
    assert not is_unavailable(caught.value)


async def test_a_server_that_is_gone_is_an_outage(database: TestDatabase) -> None:
    if database.kind != "postgres":
        pytest.skip("a server's outage is PostgreSQL's")
    engine = database.new_engine(pool_size=1)
    try:
        async with engine.connect() as conn:
            with pytest.raises(sa_exc.DBAPIError) as caught:
                # What every connection gets when PostgreSQL restarts (SQLSTATE 57P01).
                await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert is_unavailable(caught.value)
    finally:
        await engine.dispose()
    refused = make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        with pytest.raises(OSError) as caught_refused:
            async with refused.connect():
                pass
        assert is_unavailable(caught_refused.value)
    finally:
        await refused.dispose()
