"""Approval decisions over real HTTP: the decision changes what the agent does, the first one
wins, and every refusal is in the contract's shape (both databases)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dashboard.conftest import Api, assert_error
from tests.dashboard.test_sessions import all_events, base, settled
from tests.fakes.anthropic_api import FakeAnthropic
from tests.waiting import eventually

DECISION_FIELDS = {"tool_use_id", "decision", "reason", "decided_by", "decided_at"}


async def waiting_tool_call(api: Api) -> tuple[str, str, str]:
    """An agent whose `bash` needs approval, a session whose turn waits on it: the ids."""
    agent = await api.agent(approval_required_tools=["bash"])
    session = await api.session(agent["id"], "list the files [tool:bash]")

    async def requested() -> Any:
        events = await all_events(api, agent["id"], session["id"])
        return next((e for e in events if e["type"] == "app.approval_requested"), None)

    request = await eventually(requested)
    assert request["data"]["tool_name"] == "bash"
    return agent["id"], session["id"], request["data"]["tool_use_id"]


def approval(agent_id: str, session_id: str, tool_use_id: str) -> str:
    return base(agent_id, session_id) + f"/approvals/{tool_use_id}"


@pytest.mark.parametrize("decision", ["allow", "deny"])
async def test_a_decision_over_http_decides_what_the_agent_does(
    api: Api, fake_runtime: FakeAnthropic, decision: str
) -> None:
    agent_id, session_id, tool_use_id = await waiting_tool_call(api)
    waiting = await api.get(base(agent_id, session_id))
    assert waiting.body["status"] == "running", "the turn waits for the decision"

    reply = await api.post(
        approval(agent_id, session_id, tool_use_id),
        json={"decision": decision, "reason": "house rules"},
    )
    assert reply.status == 200, reply.body
    assert set(reply.body) == DECISION_FIELDS
    assert reply.body["tool_use_id"] == tool_use_id
    assert reply.body["decision"] == decision
    assert reply.body["reason"] == "house rules"
    assert reply.body["decided_by"] == "user_1"
    assert reply.body["decided_at"]

    await settled(api, agent_id, session_id)
    events = await all_events(api, agent_id, session_id)
    kinds = [e["type"] for e in events]
    sent = fake_runtime.sent_events(event_type="user.tool_confirmation")
    assert [(e["tool_use_id"], e["result"]) for e in sent] == [(tool_use_id, decision)]
    replies = [
        "".join(block.get("text", "") for block in e["data"].get("content", []))
        for e in events
        if e["type"] == "agent.message"
    ]
    if decision == "allow":
        assert "agent.tool_result" in kinds
    else:
        assert "agent.tool_result" not in kinds
        assert any("denied: house rules" in text for text in replies), replies
    assert kinds[-1] == "session.status_idle"


async def test_the_first_decision_wins_and_a_second_is_409(
    api: Api, fake_runtime: FakeAnthropic
) -> None:
    agent_id, session_id, tool_use_id = await waiting_tool_call(api)
    path = approval(agent_id, session_id, tool_use_id)
    first = await api.post(path, json={"decision": "deny"})
    assert first.status == 200, first.body
    assert first.body["reason"] is None
    assert_error(await api.post(path, json={"decision": "allow"}), 409, "conflict")
    assert_error(await api.post(path, json={"decision": "deny"}), 409, "conflict")
    await settled(api, agent_id, session_id)
    assert len(fake_runtime.sent_events(event_type="user.tool_confirmation")) == 1


async def test_unknown_foreign_and_unauthenticated_decisions_are_refused(api: Api) -> None:
    agent_id, session_id, tool_use_id = await waiting_tool_call(api)
    body = {"decision": "allow"}
    assert_error(
        await api.post(approval(agent_id, session_id, "toolu_nothing_waits"), json=body), 404
    )
    assert_error(await api.post(approval(agent_id, "sess_missing", tool_use_id), json=body), 404)
    other_agent = await api.agent(name="other")
    assert_error(
        await api.post(approval(other_agent["id"], session_id, tool_use_id), json=body), 404
    )
    foreign = await api.post(
        approval(agent_id, session_id, tool_use_id), json=body, token=api.other_token
    )
    assert_error(foreign, 404)
    assert_error(
        await api.post(approval(agent_id, session_id, tool_use_id), json=body, token=None),
        401,
        "unauthenticated",
    )
    bad_path = approval(agent_id, session_id, "not%20an%20id")
    assert_error(await api.post(bad_path, json=body), 404)
    # None of these decided anything: the call still waits, and can be decided once.
    decided = await api.post(approval(agent_id, session_id, tool_use_id), json=body)
    assert decided.status == 200, decided.body
    await settled(api, agent_id, session_id)


BAD_DECISIONS: list[tuple[Any, str]] = [
    ({"decision": "maybe"}, "decision"),
    ({}, "decision"),
    ({"decision": "allow", "reason": 3}, "reason"),
    ({"decision": "allow", "reason": "a\u0000b"}, "reason"),
    ({"decision": "allow", "reason": "x" * 4001}, "reason"),
    ({"decision": "allow", "why": "typo"}, "why"),
    (["allow"], "body"),
]


async def test_a_bad_decision_body_is_422_naming_the_field(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    for body, field in BAD_DECISIONS:
        reply = await api.post(approval(agent["id"], session["id"], "toolu_1"), json=body)
        error = assert_error(reply, 422, "invalid_field")
        assert error["message"].startswith(field), (body, error)


async def test_a_decision_that_is_not_json_is_400(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = approval(agent["id"], session["id"], "toolu_1")
    assert_error(await api.post(path, data=b"{decision: allow"), 400, "bad_request")
    assert_error(await api.post(path, data=b""), 400, "bad_request")
