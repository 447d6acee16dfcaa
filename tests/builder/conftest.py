"""Fixtures of the builder-tool tests: the whole app behind HS256 tokens with the fake
managed-agents API for real turns, a dashboard client, and seeding through the core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest

from router.builder import BUILDER_TOOLS
from router.types import Actor
from tests.conftest import FAKE_API_KEY, RunningApp, TestDatabase, start_app
from tests.dashboard.conftest import Api, Reply
from tests.fakes.anthropic_api import FakeAnthropic
from tests.waiting import eventually

SECRET = "builder-test-jwt-secret-long-enough-for-hs256"
API_KEY = FAKE_API_KEY  # the key the shared `fake_runtime` fixture expects
WORKSPACE = "ws_alpha"  # the workspace of Api.token
ACTOR = Actor(WORKSPACE, "user_1")
OTHER_ACTOR = Actor("ws_beta", "user_1")  # the workspace of Api.other_token


@pytest.fixture
async def running(database: TestDatabase, fake_runtime: FakeAnthropic) -> AsyncIterator[RunningApp]:
    app = await start_app(
        database,
        supabase_jwt_secret=SECRET,
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake_runtime.base_url,
        turn_timeout_seconds=30,
    )
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def api(running: RunningApp) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(running, http)


async def deploy(running: RunningApp, actor: Actor = ACTOR, name: str = "helper") -> str:
    agent = await running.services.core.deploy_agent(
        actor,
        name=name,
        model="claude-sonnet-4-5",
        system="Be brief.",
        approval_required_tools=[],
        slack=None,
    )
    return agent.id


async def settled(running: RunningApp, agent_id: str, session_id: str, actor: Actor = ACTOR):
    """Until the session is idle with nothing queued and no turn runs."""

    async def done() -> bool:
        view = await running.services.core.get_session(actor, agent_id, session_id)
        return view.status == "idle" and view.queued == 0

    await eventually(done, timeout=20)
    await running.services.runner.wait_idle(timeout=20)


async def chat(running: RunningApp, agent_id: str, *texts: str, actor: Actor = ACTOR) -> str:
    """A dashboard session with these messages, each answered by a real turn."""
    view, _ = await running.services.core.create_session(actor, agent_id, text=texts[0])
    await settled(running, agent_id, view.id, actor)
    for text in texts[1:]:
        await running.services.core.post_message(actor, agent_id, view.id, text=text)
        await settled(running, agent_id, view.id, actor)
    return view.id


async def tool(api: Api, name: str, body: Any = None, **kwargs: Any) -> Reply:
    """Call a builder tool over REST; a 200 answer is checked against the tool's output schema."""
    reply = await api.post(f"/dashboard/builder/{name}", json=body, **kwargs)
    if reply.status == 200:
        jsonschema.Draft202012Validator(BUILDER_TOOLS[name].output_schema).validate(reply.body)
    return reply
