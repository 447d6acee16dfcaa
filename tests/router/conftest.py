"""Fixtures for core tests: the app with the fake managed-agents API behind it."""

from __future__ import annotations

import pytest

from router.sessions import SessionService
from router.types import Actor
from tests.conftest import FAKE_API_KEY, TestDatabase, start_app
from tests.fakes.anthropic_api import FakeAnthropic
from tests.waiting import eventually

ACTOR = Actor("ws_core", "user_1")
API_KEY = FAKE_API_KEY  # the key the shared `fake_runtime` fixture expects


@pytest.fixture
async def running(database: TestDatabase, fake_runtime: FakeAnthropic):
    app = await start_app(
        database,
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake_runtime.base_url,
        turn_timeout_seconds=20,
    )
    try:
        yield app
    finally:
        await app.stop()


async def deploy(
    core: SessionService, *, approval: list[str] | None = None, actor: Actor = ACTOR
) -> str:
    agent = await core.deploy_agent(
        actor,
        name="helper",
        model="claude-sonnet-4-5",
        system="Be brief.",
        approval_required_tools=approval or [],
        slack=None,
    )
    return agent.id


async def all_events(
    core: SessionService, agent_id: str, session_id: str, actor: Actor = ACTOR
) -> list:
    events, _ = await core.events(actor, agent_id, session_id, limit=1000)
    return events


async def settled(app, agent_id: str, session_id: str, actor: Actor = ACTOR) -> None:
    """Until the session is idle with nothing queued and no turn runs here."""

    async def done() -> bool:
        view = await app.services.core.get_session(actor, agent_id, session_id)
        return view.status == "idle" and view.queued == 0

    await eventually(done, timeout=20)
    await app.services.runner.wait_idle(timeout=20)
