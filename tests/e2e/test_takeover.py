"""A turn changes hands: another runner takes the session over, and the Slack thread still shows
each answer once, on both databases.

Two in-process apps on one database, the fake Slack and the fake runtime over HTTP. A crash is
simulated as kill -9 leaves it (nothing settled, nothing drained); `tests/e2e/test_replicas.py`
does the same with real processes and SIGKILL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, update

from store.models import AgentSession, SessionEvent, SessionInbox, utcnow
from tests.bot.conftest import SlackHarness, dm, start_slack_app
from tests.conftest import RunningApp, TestDatabase
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import FakeSlack
from tests.waiting import eventually

FAST_TAKEOVER = {"lease_seconds": 1.0, "recover_every": 0.2}


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


async def _crash(app: RunningApp) -> None:
    """What kill -9 leaves: turns cut where they stand, unsettled; Slack deliveries dropped."""
    runner = app.services.runner
    outbox = app.services.extras["slack"].outbox
    runner._closing = True
    tasks = [*runner._tasks.values(), runner._recover_task, *outbox._side_tasks]
    tasks += [lane.task for lane in outbox._lanes.values() if lane.task is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    outbox._lanes.clear()
    await app.runner.cleanup()
    await app.services.engine.dispose()


async def _only_session(database: TestDatabase) -> str:
    async with database.sessionmaker() as s:
        return await eventually(lambda: s.scalar(select(AgentSession.id)))


async def _count(database: TestDatabase, model: Any, *where: Any) -> int:
    async with database.sessionmaker() as s:
        return await s.scalar(select(func.count()).select_from(model).where(*where))


def _sent(anthropic: FakeAnthropic) -> list[dict[str, Any]]:
    return anthropic.sent_events(event_type="user.message")


async def _answered(slack: FakeSlack, event: dict[str, Any], answer: str) -> list[str]:
    """The bot's messages in the thread, once the answer is there and no stream is open."""

    def done() -> list[str] | None:
        messages = slack.thread(event["channel"], event["ts"])
        if any(m.streaming for m in messages) or answer not in "".join(m.text for m in messages):
            return None
        return [m.text for m in messages]

    return await slack.wait_for(done, timeout=20)


async def test_a_runner_that_loses_its_session_stops_and_the_next_one_answers_once(
    database: TestDatabase, fake_slack: FakeSlack, fake_anthropic: FakeAnthropic
) -> None:
    app = await start_slack_app(database, fake_slack, fake_anthropic, **FAST_TAKEOVER)
    try:
        async with aiohttp.ClientSession() as http:
            harness = SlackHarness(app, fake_slack, fake_anthropic, http)
            await harness.bind_agent()
            event = dm("steal me [slow:0.2]")
            await harness.send(event)
            await eventually(lambda: _sent(fake_anthropic))
            session_id = await _only_session(database)
            # Another runner holds the session now (as after this one stalled past its lease).
            async with database.sessionmaker.begin() as s:
                await s.execute(
                    update(AgentSession)
                    .where(AgentSession.id == session_id)
                    .values(runner_id="run_other", lease_expires_at=utcnow() + timedelta(hours=1))
                )
            await app.services.runner.wait_idle(timeout=10)
            runtime_session = fake_anthropic.world.sessions
            await fake_anthropic.wait_idle(next(iter(runtime_session)), timeout=10)
            answers = SessionEvent.type == "agent.message"
            assert await _count(database, SessionEvent, answers) == 0, "it stopped writing"

            # The other runner dies: its lease runs out, and this process takes the turn over.
            async with database.sessionmaker.begin() as s:
                await s.execute(
                    update(AgentSession)
                    .where(AgentSession.id == session_id)
                    .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                )
            thread = await _answered(fake_slack, event, "You said: steal me")
            await harness.settle()
    finally:
        await app.stop()
        await app.services.close()
    assert thread == ["You said: steal me"], "the half-streamed message is completed in place"
    assert len(_sent(fake_anthropic)) == 1
    assert await _count(database, SessionEvent, SessionEvent.type == "user.message") == 1
    assert await _count(database, SessionEvent, SessionEvent.type == "agent.message") == 1


async def test_an_answer_mirrored_but_not_yet_in_slack_survives_a_crash(
    database: TestDatabase, fake_slack: FakeSlack, fake_anthropic: FakeAnthropic
) -> None:
    first = await start_slack_app(database, fake_slack, fake_anthropic, **FAST_TAKEOVER)
    async with aiohttp.ClientSession() as http:
        harness = SlackHarness(first, fake_slack, fake_anthropic, http)
        await harness.bind_agent()
        # Slack fails the first streamed chunk (the client retries after half a second or more):
        # the answer is in the mirror, and nothing is in the thread yet when the process dies.
        fake_slack.fail("chat.startStream", status=500, times=3)
        event = dm("survive this")
        await harness.send(event)
        session_id = await _only_session(database)
        await eventually(lambda: fake_slack.calls_of("chat.startStream"))
        answers = SessionEvent.type == "agent.message"
        await eventually(lambda: _count(database, SessionEvent, answers))
        await _crash(first)

        second = await start_slack_app(database, fake_slack, fake_anthropic, **FAST_TAKEOVER)
        try:
            thread = await _answered(fake_slack, event, "You said: survive this")
            await SlackHarness(second, fake_slack, fake_anthropic, http).settle()
        finally:
            await second.stop()
            await second.services.close()
    assert thread == ["You said: survive this"]
    assert len(_sent(fake_anthropic)) == 1, "the message reached the runtime once"
    assert await _count(database, SessionEvent, answers) == 1
    state = SessionInbox.session_id == session_id
    async with database.sessionmaker() as s:
        assert list(await s.scalars(select(SessionInbox.state).where(state))) == ["sent"]
