"""Failures answered in the contract's shape: wallet (429), runtime (502/503), and an unexpected
error (500 `internal_error`, never a traceback)."""

from __future__ import annotations

import aiohttp
from sqlalchemy import text

from tests.conftest import RunningApp, TestDatabase, start_app
from tests.dashboard.conftest import API_KEY, SECRET, Api, assert_error
from tests.dashboard.test_sessions import all_events, base, settled
from tests.fakes.anthropic_api import FakeAnthropic
from tests.waiting import eventually


async def test_an_empty_wallet_refuses_new_messages_with_429(
    database: TestDatabase, fake_runtime: FakeAnthropic
) -> None:
    running = await start_app(
        database,
        supabase_jwt_secret=SECRET,
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake_runtime.base_url,
        starting_credit_usd="0",
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(running, http)
            agent = await api.agent()
            refused = await api.post(
                f"/dashboard/agents/{agent['id']}/sessions", json={"text": "hello"}
            )
            assert_error(refused, 429, "wallet_empty")
            session = await api.session(agent["id"])  # an empty session costs nothing
            message = await api.post(
                base(agent["id"], session["id"]) + "/messages", json={"text": "hi"}
            )
            assert_error(message, 429, "wallet_empty")
    finally:
        await running.stop()


async def _running_turn(api: Api) -> tuple[str, str]:
    agent = await api.agent()
    session = await api.session(agent["id"], "slowly [slow:0.3] [long:300]")

    async def started() -> bool:
        events = await all_events(api, agent["id"], session["id"])
        return any(e["type"] == "span.model_request_start" for e in events)

    await eventually(started)
    return agent["id"], session["id"]


async def test_a_runtime_refusal_is_502_and_an_outage_503(
    api: Api, fake_runtime: FakeAnthropic
) -> None:
    agent_id, session_id = await _running_turn(api)
    path = base(agent_id, session_id) + "/interrupt"
    fake_runtime.fail_next("/events", 400, method="POST", message="no such thing")
    assert_error(await api.post(path), 502, "runtime_bad_request")
    fake_runtime.fail_next("/events", 529, times=5, method="POST")
    assert_error(await api.post(path), 503)
    assert (await api.post(path)).status == 202  # the runtime is back: interrupted
    await settled(api, agent_id, session_id)


async def test_an_unexpected_failure_is_a_bare_500(api: Api, running: RunningApp) -> None:
    await api.agent()
    async with running.services.engine.begin() as conn:
        await conn.execute(text("DROP TABLE slack_bindings"))
    reply = await api.get("/dashboard/agents")
    error = assert_error(reply, 500, "internal_error")
    assert "Traceback" not in error["message"] and "slack_bindings" not in error["message"]
