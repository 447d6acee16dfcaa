"""The five builder tools over REST (`/dashboard/builder/...`) on both databases: what each
answers after real turns, pagination, workspace scoping, and input validation and auth."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import update

from router.builder import BUILDER_TOOLS
from router.triggers import sign
from store.models import Schedule, utcnow
from tests.builder.conftest import ACTOR, OTHER_ACTOR, chat, deploy, settled, tool
from tests.dashboard.conftest import assert_error
from tests.waiting import eventually

TOOL_NAMES = {
    "list_live_agent_sessions",
    "read_live_agent_session",
    "search_live_agent_sessions",
    "get_agent_session_usage",
    "list_agent_trigger_runs",
}


async def test_the_tool_list_gives_each_tool_with_its_schemas(api):
    reply = await api.get("/dashboard/builder/tools")
    assert reply.status == 200
    tools = {t["name"]: t for t in reply.body["tools"]}
    assert set(tools) == TOOL_NAMES
    for name, listed in tools.items():
        assert listed["description"]
        assert listed["input_schema"] == BUILDER_TOOLS[name].input_schema
        assert listed["output_schema"]["type"] == "object"
        assert "agent_id" in listed["input_schema"]["required"]


async def test_sessions_are_listed_newest_first_page_by_page(api, running):
    agent = await deploy(running)
    first = await chat(running, agent, "hello one")
    second, _ = await running.services.core.create_session(ACTOR, agent, title="empty")
    third = await chat(running, agent, "hello three")

    page = await tool(api, "list_live_agent_sessions", {"agent_id": agent, "limit": 2})
    assert page.status == 200
    assert [s["id"] for s in page.body["sessions"]] == [third, second.id]
    assert page.body["has_more"] is True
    newest = page.body["sessions"][0]
    assert newest["status"] == "idle" and newest["source"] == "dashboard"
    assert newest["turns"] == 1 and newest["events"] >= 4 and newest["queued"] == 0

    rest = await tool(
        api,
        "list_live_agent_sessions",
        {"agent_id": agent, "limit": 2, "cursor": page.body["next_cursor"]},
    )
    assert [s["id"] for s in rest.body["sessions"]] == [first]
    assert rest.body == {**rest.body, "has_more": False, "next_cursor": None}

    await running.services.core.archive(ACTOR, agent, first)
    archived = await tool(
        api, "list_live_agent_sessions", {"agent_id": agent, "status": "archived"}
    )
    assert [s["id"] for s in archived.body["sessions"]] == [first]


async def test_a_session_is_read_with_its_whole_history_in_pages(api, running):
    agent = await deploy(running)
    session = await chat(running, agent, "what is the weather", "and tomorrow")

    whole = await tool(api, "read_live_agent_session", {"agent_id": agent, "session_id": session})
    assert whole.status == 200
    assert whole.body["session"]["id"] == session and whole.body["has_more"] is False
    events = whole.body["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    said = [
        (e["type"], e["data"]["content"][0]["text"])
        for e in events
        if e["type"] in ("user.message", "agent.message")
    ]
    assert said == [
        ("user.message", "what is the weather"),
        ("agent.message", "You said: what is the weather"),
        ("user.message", "and tomorrow"),
        ("agent.message", "You said: and tomorrow"),
    ]
    assert events[-1]["type"] == "session.status_idle"

    first = await tool(
        api, "read_live_agent_session", {"agent_id": agent, "session_id": session, "limit": 3}
    )
    assert [e["seq"] for e in first.body["events"]] == [1, 2, 3]
    assert first.body["has_more"] is True and first.body["next_after_seq"] == 3
    after = await tool(
        api,
        "read_live_agent_session",
        {"agent_id": agent, "session_id": session, "after_seq": 3, "limit": 1000},
    )
    assert [e["seq"] for e in after.body["events"]] == list(range(4, len(events) + 1))


async def test_search_finds_what_was_said_with_a_snippet(api, running):
    agent = await deploy(running)
    about_k8s = await chat(running, agent, "our kubernetes cluster is down", "restart it")
    await chat(running, agent, "plan the team lunch")

    reply = await tool(
        api, "search_live_agent_sessions", {"agent_id": agent, "query": "Kubernetes cluster"}
    )
    assert reply.status == 200
    results = reply.body["results"]
    assert {(r["session_id"], r["type"]) for r in results} == {
        (about_k8s, "user.message"),
        (about_k8s, "agent.message"),
    }
    assert all("**kubernetes**" in r["snippet"].lower() for r in results)
    assert all(r["score"] > 0 for r in results)
    # The seq points into the session's history.
    history = await tool(
        api,
        "read_live_agent_session",
        {"agent_id": agent, "session_id": about_k8s, "after_seq": results[0]["seq"] - 1},
    )
    assert history.body["events"][0]["type"] == results[0]["type"]

    nothing = await tool(api, "search_live_agent_sessions", {"agent_id": agent, "query": "volcano"})
    assert nothing.body == {"results": []}
    limited = await tool(
        api, "search_live_agent_sessions", {"agent_id": agent, "query": "said", "limit": 1}
    )
    assert len(limited.body["results"]) == 1


async def test_a_query_without_words_is_a_422_naming_it(api, running):
    agent = await deploy(running)
    reply = await tool(api, "search_live_agent_sessions", {"agent_id": agent, "query": "?!*"})
    error = assert_error(reply, 422)
    assert error["message"].startswith("query")


async def test_usage_gives_each_turn_and_the_total(api, running):
    agent = await deploy(running)
    session = await chat(running, agent, "first question", "second question")

    async def both_turns_metered():
        reply = await tool(
            api, "get_agent_session_usage", {"agent_id": agent, "session_id": session}
        )
        return reply if len(reply.body["turns"]) == 2 else None

    reply = await eventually(both_turns_metered)
    body = reply.body
    assert body["session_id"] == session
    assert [t["turn"] for t in body["turns"]] == [1, 2]
    assert all(t["model"] == "claude-sonnet-4-5" for t in body["turns"])
    assert all(t["output_tokens"] > 0 and t["input_tokens"] > 0 for t in body["turns"])
    for field in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
        assert body["total"][field] == sum(t[field] for t in body["turns"])
    assert Decimal(body["total"]["cost_usd"]) == sum(Decimal(t["cost_usd"]) for t in body["turns"])
    assert Decimal(body["total"]["cost_usd"]) > 0
    assert body["total"]["runtime_seconds"] == pytest.approx(
        sum(t["runtime_seconds"] for t in body["turns"])
    )


async def test_usage_of_a_session_without_turns_is_zero(api, running):
    agent = await deploy(running)
    view, _ = await running.services.core.create_session(ACTOR, agent)
    reply = await tool(api, "get_agent_session_usage", {"agent_id": agent, "session_id": view.id})
    assert reply.body["turns"] == []
    assert reply.body["total"]["cost_usd"] == "0.000000"
    assert reply.body["total"]["runtime_seconds"] == 0


async def test_trigger_runs_pair_each_session_with_what_fired_it(api, running, database):
    agent = await deploy(running)
    triggers = running.services.triggers
    schedule = await triggers.create_schedule(
        ACTOR, agent, cron="0 9 * * *", timezone="Europe/Paris", input_text="morning report"
    )
    async with database.sessionmaker.begin() as s:
        await s.execute(
            update(Schedule)
            .where(Schedule.id == schedule.id)
            .values(next_fire_at=utcnow() - timedelta(minutes=1))
        )
    assert await triggers.fire_due() == 1
    webhook = await triggers.create_webhook(ACTOR, agent)
    body = json.dumps({"alert": "disk full"}).encode()
    delivery = await triggers.deliver(
        webhook.id, body, signature=sign(webhook.secret, body), idempotency_key="k1"
    )
    await settled(running, agent, delivery.session_id)

    async def both_finished():
        reply = await tool(api, "list_agent_trigger_runs", {"agent_id": agent})
        runs = reply.body["runs"]
        return reply if len(runs) == 2 and all(r["status"] == "ok" for r in runs) else None

    reply = await eventually(both_finished, timeout=20)
    by_kind = {r["kind"]: r for r in reply.body["runs"]}
    assert reply.body["runs"][0]["kind"] == "webhook"  # newest first
    hooked = by_kind["webhook"]
    assert hooked["id"] == delivery.trigger_run_id
    assert hooked["webhook_endpoint_id"] == webhook.id and hooked["schedule"] is None
    assert hooked["session"]["id"] == delivery.session_id
    assert hooked["session"]["source"] == "webhook" and hooked["finished_at"]
    scheduled = by_kind["schedule"]
    assert scheduled["schedule"] == {
        "id": schedule.id,
        "cron": "0 9 * * *",
        "timezone": "Europe/Paris",
        "enabled": True,
    }
    assert scheduled["webhook_endpoint_id"] is None and scheduled["fire_time"]
    assert scheduled["session"]["source"] == "schedule"
    assert scheduled["session"]["title"] == "morning report"

    first = await tool(api, "list_agent_trigger_runs", {"agent_id": agent, "limit": 1})
    assert [r["kind"] for r in first.body["runs"]] == ["webhook"]
    second = await tool(
        api,
        "list_agent_trigger_runs",
        {"agent_id": agent, "limit": 1, "cursor": first.body["next_cursor"]},
    )
    assert [r["kind"] for r in second.body["runs"]] == ["schedule"]
    assert second.body["has_more"] is False


async def test_another_workspaces_agent_and_sessions_are_not_found(api, running):
    theirs = await deploy(running, OTHER_ACTOR)
    their_session = await chat(running, theirs, "a private matter", actor=OTHER_ACTOR)
    mine = await deploy(running)

    for name in sorted(TOOL_NAMES):
        body = {"agent_id": theirs, "session_id": their_session, "query": "private"}
        allowed = BUILDER_TOOLS[name].input_schema["properties"]
        reply = await tool(api, name, {k: v for k, v in body.items() if k in allowed})
        assert_error(reply, 404, "agent_not_found")
    # Their session asked for through my agent: not found either.
    reply = await tool(
        api, "read_live_agent_session", {"agent_id": mine, "session_id": their_session}
    )
    assert_error(reply, 404, "session_not_found")
    # They see their own.
    theirs_seen = await tool(
        api,
        "search_live_agent_sessions",
        {"agent_id": theirs, "query": "private"},
        token=api.other_token,
    )
    assert {r["session_id"] for r in theirs_seen.body["results"]} == {their_session}
    mine_seen = await tool(
        api, "search_live_agent_sessions", {"agent_id": mine, "query": "private"}
    )
    assert mine_seen.body["results"] == []


async def test_a_session_of_another_agent_in_the_workspace_is_not_found(api, running):
    one = await deploy(running, name="one")
    two = await deploy(running, name="two")
    session = await chat(running, one, "hello")
    for name in ("read_live_agent_session", "get_agent_session_usage"):
        reply = await tool(api, name, {"agent_id": two, "session_id": session})
        assert_error(reply, 404, "session_not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "agent_id"),
        ({"agent_id": "agt_x", "limit": 0}, "limit"),
        ({"agent_id": "agt_x", "limit": 201}, "limit"),
        ({"agent_id": "agt_x", "limit": 2.0}, "limit"),
        ({"agent_id": "agt_x", "limit": "5"}, "limit"),
        ({"agent_id": "agt_x", "status": "sleeping"}, "status"),
        ({"agent_id": "agt_x", "sorted": True}, "sorted"),
        ({"agent_id": "../etc"}, "agent_id"),
        ({"agent_id": "agt_x", "cursor": "not a cursor!"}, "cursor"),
        ([1, 2], "body"),
    ],
)
async def test_invalid_input_is_a_422_naming_the_field(api, body, field):
    reply = await tool(api, "list_live_agent_sessions", body)
    error = assert_error(reply, 422, "invalid_field")
    assert error["message"].startswith(f"{field}:"), error


async def test_a_forged_cursor_is_a_422(api, running):
    agent = await deploy(running)
    reply = await tool(api, "list_live_agent_sessions", {"agent_id": agent, "cursor": "bm9wZQ"})
    error = assert_error(reply, 422)
    assert error["message"].startswith("cursor")


async def test_malformed_requests_and_auth_failures(api):
    path = "/dashboard/builder/list_live_agent_sessions"
    assert_error(await api.post(path, json={"agent_id": "agt_x"}, token=None), 401)
    assert_error(await api.post(path, json={"agent_id": "agt_x"}, token="nope"), 401)
    expired = api.token_for("ws_alpha", ttl=-3600)
    assert_error(await api.post(path, json={"agent_id": "agt_x"}, token=expired), 401)
    assert_error(await api.get("/dashboard/builder/tools", token=None), 401)
    bad_json = await api.post(path, data=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(bad_json, 400, "bad_request")
    assert_error(await api.post("/dashboard/builder/drop_tables", json={}), 404)
    assert_error(await api.get(path), 405)
    assert_error(await api.post(path, json={"agent_id": "agt_missing"}), 404, "agent_not_found")
