"""A turn settles while the second event of the same Slack message is being taken: no deadlock.

Slack delivers a channel mention twice (`app_mention` and `message`); the second delivery locks
the session row to number its message, then finds the message already queued (same dedupe key).
A turn settling that very message must lock the session row before the message row, or the two
transactions wait for each other (PostgreSQL then aborts one: the turn stays unsettled for a
whole lease)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import select, text, update

from store.db import insert_for
from store.ids import new_id
from store.models import AgentSession, SessionInbox, utcnow
from tests.bot.conftest import SlackHarness, dm, start_slack_app
from tests.conftest import TestDatabase
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import FakeSlack
from tests.waiting import eventually


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeSlack, FakeAnthropic]]:
    slack = await FakeSlack().start()
    async with FakeAnthropic() as anthropic:
        try:
            yield slack, anthropic
        finally:
            await slack.stop()


async def _blocked_by(database: TestDatabase, pid: int) -> int:
    async with database.engine.connect() as conn:
        return await conn.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
            {"pid": pid},
        )


async def test_a_duplicate_delivery_during_the_settle_does_not_deadlock(
    database: TestDatabase, fakes: tuple[FakeSlack, FakeAnthropic]
) -> None:
    if database.kind != "postgres":
        pytest.skip("row locks are PostgreSQL's (SQLite has one writer)")
    slack, anthropic = fakes
    app = await start_slack_app(database, slack, anthropic)
    try:
        async with aiohttp.ClientSession() as http:
            harness = SlackHarness(app, slack, anthropic, http)
            await harness.bind_agent()
            # The answer's last Slack call takes a moment: the turn waits for it, then settles.
            slack.slow("chat.stopStream", 1.0)
            await harness.send(dm("twice"))
            await eventually(lambda: slack.calls_of("chat.stopStream"))
            async with database.sessionmaker() as s:
                message = await s.scalar(select(SessionInbox))
            async with database.engine.connect() as ack:  # the second delivery's transaction
                taking = await ack.begin()
                pid = await ack.scalar(text("SELECT pg_backend_pid()"))
                await ack.execute(
                    update(AgentSession)
                    .where(AgentSession.id == message.session_id)
                    .values(inbox_seq=AgentSession.inbox_seq + 1)
                )
                await eventually(lambda: _blocked_by(database, pid))  # the settle waits on us
                async with database.sessionmaker() as s:
                    dialect_insert = insert_for(s, SessionInbox)
                twin = (
                    dialect_insert.values(
                        id=new_id("msg"),
                        session_id=message.session_id,
                        position=2,
                        state="queued",
                        text="twice",
                        content=[],
                        dedupe_key=message.dedupe_key,
                        created_at=utcnow(),
                    )
                    .on_conflict_do_nothing(index_elements=["dedupe_key"])
                    .returning(SessionInbox.id)
                )
                async with asyncio.timeout(10):
                    assert (await ack.execute(twin)).first() is None, "a duplicate: dropped"
                await taking.commit()
            await app.services.runner.wait_idle(timeout=10)
        async with database.sessionmaker() as s:
            states = list(await s.scalars(select(SessionInbox.state)))
            status = await s.scalar(select(AgentSession.status))
    finally:
        await app.stop()
        await app.services.close()
    assert states == ["sent"] and status == "idle", "settled at once, not after a lease"
