"""Schedules, webhook endpoints, webhook deliveries and trigger runs over real HTTP, on both
databases: each route's answers and refusals, and a refused delivery creates nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import update

from dashboard_api.openapi import build_spec
from store.models import Schedule, utcnow
from tests.conftest import TestDatabase, start_app
from tests.dashboard.conftest import API_KEY, SECRET, Api, assert_error
from tests.dashboard.test_sessions import all_events, settled
from tests.fakes.anthropic_api import FakeAnthropic
from tests.waiting import eventually

SCHEDULE_FIELDS = {
    "id",
    "agent_id",
    "cron",
    "timezone",
    "input_text",
    "enabled",
    "slack",
    "next_fire_at",
    "last_fired_at",
    "created_at",
}
RUN_FIELDS = {
    "id",
    "kind",
    "schedule_id",
    "webhook_endpoint_id",
    "session_id",
    "session_status",
    "status",
    "error",
    "fire_time",
    "created_at",
    "finished_at",
}


def schedules(agent_id: str) -> str:
    return f"/dashboard/agents/{agent_id}/schedules"


def runs(agent_id: str) -> str:
    return f"/dashboard/agents/{agent_id}/trigger-runs"


def signed(secret: str, body: bytes, **headers: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Signature": f"sha256={digest}", **headers}


async def webhook(api: Api, agent_id: str) -> dict[str, Any]:
    reply = await api.post(f"/dashboard/agents/{agent_id}/webhooks")
    assert reply.status == 201, reply.body
    return reply.body


async def deliver(
    api: Api, hook: dict[str, Any], body: bytes, headers: dict[str, str] | None = None
) -> Any:
    path = "/webhooks/" + hook["id"]
    return await api.post(
        path, data=body, token=None, headers=headers or signed(hook["secret"], body)
    )


async def webhook_sessions(api: Api, agent_id: str) -> list[dict[str, Any]]:
    reply = await api.get(f"/dashboard/agents/{agent_id}/sessions", params={"source": "webhook"})
    assert reply.status == 200
    return reply.body["data"]


# -- schedules ----------------------------------------------------------------------------------


async def test_create_list_and_delete_a_schedule(api: Api) -> None:
    agent = await api.agent()
    body = {
        "cron": "0 9 * * 1-5",
        "timezone": "Europe/Paris",
        "input_text": "Summarise yesterday's tickets",
        "slack": {"team_id": "T1", "channel_id": "C42"},
    }
    reply = await api.post(schedules(agent["id"]), json=body)
    assert reply.status == 201, reply.body
    schedule = reply.body
    assert set(schedule) == SCHEDULE_FIELDS
    assert schedule["agent_id"] == agent["id"]
    assert schedule["enabled"] is True and schedule["last_fired_at"] is None
    assert schedule["slack"] == {"team_id": "T1", "channel_id": "C42"}
    next_fire = datetime.fromisoformat(schedule["next_fire_at"])
    assert next_fire > utcnow()
    assert next_fire.minute == 0  # 09:00 in Paris is on the hour in UTC too

    plain = await api.post(
        schedules(agent["id"]), json={"cron": "*/5 * * * *", "input_text": "ping", "enabled": False}
    )
    assert plain.status == 201, plain.body
    assert plain.body["timezone"] == "UTC"
    assert plain.body["slack"] is None and plain.body["next_fire_at"] is None

    listed = await api.get(schedules(agent["id"]))
    assert listed.status == 200
    assert listed.body["has_more"] is False and listed.body["next_cursor"] is None
    assert {s["id"] for s in listed.body["data"]} == {schedule["id"], plain.body["id"]}
    assert next(s for s in listed.body["data"] if s["id"] == schedule["id"]) == schedule

    deleted = await api.call("DELETE", schedules(agent["id"]) + "/" + schedule["id"])
    assert deleted.status == 204 and deleted.body is None
    assert_error(await api.call("DELETE", schedules(agent["id"]) + "/" + schedule["id"]), 404)
    listed = await api.get(schedules(agent["id"]))
    assert [s["id"] for s in listed.body["data"]] == [plain.body["id"]]


async def test_schedules_are_scoped_to_the_workspace(api: Api) -> None:
    agent = await api.agent()
    created = await api.post(schedules(agent["id"]), json={"cron": "@daily", "input_text": "hi"})
    assert created.status == 201, created.body
    path = schedules(agent["id"]) + "/" + created.body["id"]
    other = api.other_token
    body = {"cron": "@daily", "input_text": "mine now"}
    assert_error(await api.post(schedules(agent["id"]), json=body, token=other), 404)
    assert_error(await api.get(schedules(agent["id"]), token=other), 404)
    assert_error(await api.call("DELETE", path, token=other), 404)
    assert_error(await api.get(schedules("agt_missing")), 404)
    assert_error(await api.get(schedules(agent["id"]), token=None), 401, "unauthenticated")
    assert_error(await api.call("DELETE", path, token=None), 401)
    other_agent = await api.agent(name="other")
    assert_error(
        await api.call("DELETE", schedules(other_agent["id"]) + "/" + created.body["id"]), 404
    )
    assert len((await api.get(schedules(agent["id"]))).body["data"]) == 1


BAD_SCHEDULES: list[tuple[Any, str]] = [
    ({"cron": "every morning", "input_text": "x"}, "cron"),
    ({"cron": "0 0 31 2 *", "input_text": "x"}, "cron"),  # never fires
    ({"cron": "0 9 * * *", "timezone": "Mars/Olympus", "input_text": "x"}, "timezone"),
    ({"cron": "0 9 * * *", "timezone": "", "input_text": "x"}, "timezone"),
    ({"cron": "0 9 * * *"}, "input_text"),
    ({"cron": "0 9 * * *", "input_text": ""}, "input_text"),
    ({"cron": "0 9 * * *", "input_text": "x", "enabled": "yes"}, "enabled"),
    ({"cron": "0 9 * * *", "input_text": "x", "slack": {"team_id": "T1"}}, "slack.channel_id"),
    ({"cron": "0 9 * * *", "input_text": "x", "every": "day"}, "every"),
]


async def test_a_bad_schedule_is_422_naming_the_field(api: Api) -> None:
    agent = await api.agent()
    for body, field in BAD_SCHEDULES:
        reply = await api.post(schedules(agent["id"]), json=body)
        error = assert_error(reply, 422, "invalid_field")
        assert error["message"].startswith(field), (body, error)
    assert_error(await api.post(schedules(agent["id"]), data=b"{cron"), 400, "bad_request")
    assert (await api.get(schedules(agent["id"]))).body["data"] == []


async def test_a_due_schedule_fires_and_its_run_lists_its_session(
    api: Api, database: TestDatabase
) -> None:
    agent = await api.agent()
    created = await api.post(
        schedules(agent["id"]), json={"cron": "0 3 * * *", "input_text": "nightly report"}
    )
    assert created.status == 201, created.body
    async with database.sessionmaker.begin() as s:
        await s.execute(
            update(Schedule)
            .where(Schedule.id == created.body["id"])
            .values(next_fire_at=utcnow() - timedelta(minutes=1))
        )

    async def fired() -> Any:
        page = (await api.get(runs(agent["id"]))).body
        return page["data"] and page["data"][0]["status"] == "ok" and page["data"][0]

    run = await eventually(fired, timeout=20)
    assert set(run) == RUN_FIELDS
    assert run["kind"] == "schedule" and run["schedule_id"] == created.body["id"]
    assert run["webhook_endpoint_id"] is None and run["fire_time"] and run["finished_at"]
    session = await settled(api, agent["id"], run["session_id"])
    assert session["source"] == "schedule"
    events = await all_events(api, agent["id"], run["session_id"])
    assert [e["data"]["content"][0]["text"] for e in events if e["type"] == "user.message"] == [
        "nightly report"
    ]
    listed = (await api.get(schedules(agent["id"]))).body["data"][0]
    assert listed["last_fired_at"] is not None


# -- webhooks -----------------------------------------------------------------------------------


async def test_a_webhook_endpoint_has_a_url_and_a_secret(api: Api) -> None:
    agent = await api.agent()
    hook = await webhook(api, agent["id"])
    assert set(hook) == {"id", "url", "secret"}
    assert hook["url"] == f"{api.base_url}/webhooks/{hook['id']}"
    assert len(hook["secret"]) >= 32
    assert_error(await api.post(f"/dashboard/agents/{agent['id']}/webhooks", token=None), 401)
    foreign = await api.post(f"/dashboard/agents/{agent['id']}/webhooks", token=api.other_token)
    assert_error(foreign, 404)
    assert_error(await api.post("/dashboard/agents/agt_missing/webhooks"), 404)


async def test_the_webhook_url_uses_the_public_url_when_set(
    database: TestDatabase, fake_runtime: FakeAnthropic
) -> None:
    running = await start_app(
        database,
        supabase_jwt_secret=SECRET,
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake_runtime.base_url,
        public_url="https://agents.example.com/",
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(running, http)
            agent = await api.agent()
            hook = await webhook(api, agent["id"])
            assert hook["url"] == f"https://agents.example.com/webhooks/{hook['id']}"
    finally:
        await running.stop()


async def test_a_delivery_runs_a_turn_and_its_run_lists_the_session(api: Api) -> None:
    agent = await api.agent()
    hook = await webhook(api, agent["id"])
    body = json.dumps({"order": 42, "status": "paid"}).encode()
    reply = await deliver(api, hook, body)
    assert reply.status == 202, reply.body
    assert set(reply.body) == {"session_id", "trigger_run_id"}
    session_id = reply.body["session_id"]

    session = await settled(api, agent["id"], session_id)
    assert session["source"] == "webhook"
    events = await all_events(api, agent["id"], session_id)
    [first] = [e for e in events if e["type"] == "user.message"]
    assert json.loads(first["data"]["content"][0]["text"]) == {"order": 42, "status": "paid"}
    assert any(e["type"] == "agent.message" for e in events)

    async def finished() -> Any:
        page = (await api.get(runs(agent["id"]))).body
        return page["data"] and page["data"][0]["status"] == "ok" and page

    page = await eventually(finished)
    [run] = page["data"]
    assert set(run) == RUN_FIELDS
    assert run["id"] == reply.body["trigger_run_id"]
    assert run["kind"] == "webhook" and run["webhook_endpoint_id"] == hook["id"]
    assert run["session_id"] == session_id and run["session_status"] == "idle"
    assert run["schedule_id"] is None and run["error"] is None


async def test_a_replayed_delivery_creates_one_session(api: Api) -> None:
    agent = await api.agent()
    hook = await webhook(api, agent["id"])
    body = b'{"event": "deploy.finished"}'
    headers = signed(hook["secret"], body, **{"Idempotency-Key": "evt-1"})
    first = await deliver(api, hook, body, headers)
    assert first.status == 202, first.body
    for _ in range(3):
        again = await deliver(api, hook, body, headers)
        assert again.status == 200, again.body
        assert again.body == first.body
    # Without a key, the same body within the window is a replay too; another body is not.
    unkeyed = await deliver(api, hook, b'{"event": "deploy.started"}')
    assert unkeyed.status == 202
    assert (await deliver(api, hook, b'{"event": "deploy.started"}')).body == unkeyed.body
    sessions = await webhook_sessions(api, agent["id"])
    assert {s["id"] for s in sessions} == {first.body["session_id"], unkeyed.body["session_id"]}
    assert len((await api.get(runs(agent["id"]))).body["data"]) == 2
    for session in sessions:
        await settled(api, agent["id"], session["id"])


async def test_refused_deliveries_create_nothing(api: Api) -> None:
    agent = await api.agent()
    hook = await webhook(api, agent["id"])
    body = b'{"ok": true}'
    bad_signature = signed("not-the-secret", body)
    assert_error(await deliver(api, hook, body, bad_signature), 401, "bad_signature")
    unsigned = {"Content-Type": "application/json"}
    assert_error(await deliver(api, hook, body, unsigned), 401, "bad_signature")
    malformed = signed(hook["secret"], body, **{"X-Signature": "sha256=" + "0" * 64})
    assert_error(await deliver(api, hook, body, malformed), 401, "bad_signature")
    assert_error(await deliver(api, hook, b"not json", signed(hook["secret"], b"not json")), 400)
    nested = b"[" * 5000 + b"]" * 5000
    assert_error(await deliver(api, hook, nested, signed(hook["secret"], nested)), 400)
    huge = b'{"blob": "' + b"x" * (1024 * 1024) + b'"}'
    assert_error(await deliver(api, hook, huge, signed(hook["secret"], huge)), 413)
    long_key = signed(hook["secret"], body, **{"Idempotency-Key": "k" * 201})
    assert_error(await deliver(api, hook, body, long_key), 422, "invalid_field")
    unknown = {**hook, "id": "whk_unknown"}
    assert_error(await deliver(api, unknown, body, signed(hook["secret"], body)), 404)
    assert_error(await deliver(api, {**hook, "id": "bad id!"}, body), 404)
    assert await webhook_sessions(api, agent["id"]) == []
    assert (await api.get(runs(agent["id"]))).body["data"] == []


async def test_a_delivery_to_an_empty_wallet_is_429_and_creates_nothing(
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
            hook = await webhook(api, agent["id"])
            assert_error(await deliver(api, hook, b'{"x": 1}'), 429, "wallet_empty")
            assert await webhook_sessions(api, agent["id"]) == []
            assert (await api.get(runs(agent["id"]))).body["data"] == []
    finally:
        await running.stop()


async def test_a_delivery_with_a_lone_surrogate_is_taken(api: Api) -> None:
    agent = await api.agent()
    hook = await webhook(api, agent["id"])
    body = b'{"name": "\\ud800 broken", "nul": "\\u0000"}'
    reply = await deliver(api, hook, body)
    assert reply.status == 202, reply.body
    await settled(api, agent["id"], reply.body["session_id"])


# -- trigger runs -------------------------------------------------------------------------------


async def test_trigger_runs_page_newest_first_and_refuse_strangers(api: Api) -> None:
    agent = await api.agent()
    hook = await webhook(api, agent["id"])
    delivered = []
    for n in range(3):
        reply = await deliver(api, hook, json.dumps({"n": n}).encode())
        assert reply.status == 202
        delivered.append(reply.body["trigger_run_id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await api.get(runs(agent["id"]), params=params)
        assert page.status == 200, page.body
        seen += [r["id"] for r in page.body["data"]]
        if not page.body["has_more"]:
            assert page.body["next_cursor"] is None
            break
        cursor = page.body["next_cursor"]
    assert seen == list(reversed(delivered))
    for session in await webhook_sessions(api, agent["id"]):
        await settled(api, agent["id"], session["id"])

    assert_error(await api.get(runs(agent["id"]), params={"cursor": "junk!"}), 422)
    assert_error(await api.get(runs(agent["id"]), params={"limit": "0"}), 422)
    assert_error(await api.get(runs(agent["id"]), token=api.other_token), 404)
    assert_error(await api.get(runs(agent["id"]), token=None), 401)
    assert_error(await api.get(runs("agt_missing")), 404)


def test_the_delivery_route_is_described_without_a_bearer_token() -> None:
    operation = build_spec()["paths"]["/webhooks/{endpoint_id}"]["post"]
    assert operation["security"] == []
    assert {"202", "200", "400", "401", "404", "413", "422", "429"} <= set(operation["responses"])
    headers = {p["name"]: p["required"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"X-Signature": True, "Idempotency-Key": False}
