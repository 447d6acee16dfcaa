"""Two processes on one PostgreSQL: a watcher on one sees the turns run by the other."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from router.types import EventRecord
from tests.conftest import start_app
from tests.router.conftest import ACTOR, API_KEY, all_events, deploy, settled
from tests.waiting import eventually


async def _collect(sub, into: list[EventRecord]) -> None:
    while True:
        item = await sub.get()
        if isinstance(item, EventRecord):
            into.append(item)


async def test_a_watcher_on_process_b_sees_a_turn_run_by_process_a(database, fake_runtime):
    if database.kind != "postgres":
        pytest.skip("the cross-process bus is PostgreSQL's")
    a = await start_app(
        database, anthropic_api_key=API_KEY, anthropic_base_url=fake_runtime.base_url
    )
    b = await start_app(
        database, anthropic_api_key=API_KEY, anthropic_base_url=fake_runtime.base_url
    )
    try:
        agent_id = await deploy(a.services.core)
        session, _ = await a.services.core.create_session(ACTOR, agent_id)
        seen: list[EventRecord] = []
        sub = b.services.bus.subscribe(session.id)
        collector = asyncio.create_task(_collect(sub, seen))
        for text_ in ("one [slow:0.02]", "two", "three [long:300]"):
            await a.services.core.post_message(ACTOR, agent_id, session.id, text=text_)
        await settled(a, agent_id, session.id)
        mirror = await all_events(a.services.core, agent_id, session.id)
        await eventually(lambda: len(seen) >= len(mirror))
        collector.cancel()
        sub.close()
        assert [r.seq for r in seen] == [r.seq for r in mirror], "no gap, no duplicate, in order"
        assert [r.id for r in seen] == [r.id for r in mirror]
        assert b.services.bus.rows_loaded == len(mirror), "one read per event on B"
    finally:
        await a.stop()
        await b.stop()


async def test_the_bus_catches_up_after_losing_its_connection(database, fake_runtime):
    if database.kind != "postgres":
        pytest.skip("the cross-process bus is PostgreSQL's")
    a = await start_app(
        database, anthropic_api_key=API_KEY, anthropic_base_url=fake_runtime.base_url
    )
    b = await start_app(
        database, anthropic_api_key=API_KEY, anthropic_base_url=fake_runtime.base_url
    )
    try:
        agent_id = await deploy(a.services.core)
        session, _ = await a.services.core.create_session(ACTOR, agent_id)
        seen: list[EventRecord] = []
        sub = b.services.bus.subscribe(session.id)
        collector = asyncio.create_task(_collect(sub, seen))
        await a.services.core.post_message(ACTOR, agent_id, session.id, text="before")
        await settled(a, agent_id, session.id)
        first = await all_events(a.services.core, agent_id, session.id)
        await eventually(lambda: len(seen) == len(first))
        # cut B's listening connection (as a PostgreSQL restart would), then run a turn on A
        pid = b.services.bus._conn.get_server_pid()
        async with database.engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await a.services.core.post_message(ACTOR, agent_id, session.id, text="during")
        await settled(a, agent_id, session.id)
        mirror = await all_events(a.services.core, agent_id, session.id)
        await eventually(lambda: len(seen) >= len(mirror), timeout=20)
        collector.cancel()
        sub.close()
        assert [r.seq for r in seen] == [r.seq for r in mirror]
    finally:
        await a.stop()
        await b.stop()
