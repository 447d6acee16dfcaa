"""Approvals, escalations, usage and wallets in the core, on both databases."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from router.errors import Conflict, WalletEmpty
from router.sessions import top_up
from router.types import Actor
from store import wallets as wallets_store
from tests.router.conftest import ACTOR, all_events, deploy, settled
from tests.waiting import eventually


def _texts(events, kind: str) -> list[str]:
    return [
        "".join(b.get("text", "") for b in e.data.get("content", []))
        for e in events
        if e.type == kind
    ]


async def _approval_request(core, agent_id, session_id):
    async def requested():
        events = await all_events(core, agent_id, session_id)
        return next((e for e in events if e.type == "app.approval_requested"), None)

    return await eventually(requested)


@pytest.mark.parametrize("allow", [True, False])
async def test_an_approval_decides_what_the_agent_does(running, fake_runtime, allow):
    core = running.services.core
    agent_id = await deploy(core, approval=["bash"])
    session, _ = await core.create_session(ACTOR, agent_id, text="list files [tool:bash]")
    request = await _approval_request(core, agent_id, session.id)
    assert request.data["tool_name"] == "bash"
    view = await core.get_session(ACTOR, agent_id, session.id)
    assert view.status == "running", "the turn waits for the decision"

    decision = await core.decide_approval(
        ACTOR, agent_id, session.id, request.data["tool_use_id"], allow=allow, reason="policy"
    )
    assert decision.decision == ("allow" if allow else "deny")
    assert decision.decided_by == ACTOR.user_id
    with pytest.raises(Conflict):
        await core.decide_approval(
            ACTOR, agent_id, session.id, request.data["tool_use_id"], allow=not allow, reason=None
        )
    await settled(running, agent_id, session.id)

    events = await all_events(core, agent_id, session.id)
    kinds = [e.type for e in events]
    confirmations = fake_runtime.sent_events(event_type="user.tool_confirmation")
    assert [c["result"] for c in confirmations] == ["allow" if allow else "deny"]
    if allow:
        assert "agent.tool_result" in kinds
    else:
        assert "agent.tool_result" not in kinds
        assert any("denied" in t.lower() for t in _texts(events, "agent.message"))
    assert kinds[-1] == "session.status_idle"


async def test_escalation_lands_in_the_inbox_and_resolves(running, fake_runtime):
    core = running.services.core
    agent_id = await deploy(core)
    session, _ = await core.create_session(
        ACTOR, agent_id, text="I need a refund approved [custom:escalate_to_human]"
    )
    await settled(running, agent_id, session.id)
    events = await all_events(core, agent_id, session.id)
    notice = next(e for e in events if e.type == "app.escalation")
    results = fake_runtime.sent_events(event_type="user.custom_tool_result")
    assert len(results) == 1 and not results[0]["is_error"]

    inbox = await core.list_escalations(ACTOR, limit=10, cursor=None, status="open")
    assert [e.id for e in inbox.items] == [notice.data["escalation_id"]]
    assert inbox.items[0].session_id == session.id
    resolved = await core.resolve_escalation(ACTOR, notice.data["escalation_id"])
    assert resolved.status == "resolved" and resolved.resolved_by == ACTOR.user_id
    assert (await core.list_escalations(ACTOR, limit=10, cursor=None, status="open")).items == []
    other = Actor("another_ws", "u9")
    with pytest.raises(Exception, match="no escalation"):
        await core.resolve_escalation(other, notice.data["escalation_id"])


async def test_usage_rows_sum_to_the_runtime_tokens_and_debit_the_wallet(running, fake_runtime):
    core = running.services.core
    agent_id = await deploy(core)
    session, _ = await core.create_session(ACTOR, agent_id, text="one")
    await core.post_message(ACTOR, agent_id, session.id, text="two [long:500]")
    await settled(running, agent_id, session.id)

    view = await core.get_session(ACTOR, agent_id, session.id)
    reported = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    for event in fake_runtime.history(view.anthropic_session_id):
        if event["type"] == "span.model_request_end":
            for key in reported:
                reported[key] += event["model_usage"][key]
    assert reported["output_tokens"] > 0

    async def charged():
        return len((await core.usage(ACTOR, agent_id, session.id)).turns) == 2

    await eventually(charged)
    usage = await core.usage(ACTOR, agent_id, session.id)
    for key, value in reported.items():
        assert getattr(usage.total, key) == value
    assert usage.total.cost_usd == sum(t.cost_usd for t in usage.turns) > 0
    wallets = await core.wallets(ACTOR)
    assert wallets.balances["ai"] == Decimal("5.00") - usage.total.cost_usd
    assert [e.reason for e in wallets.ledger if e.kind == "ai"].count("turn") == 2


async def test_an_empty_wallet_refuses_new_messages(running, database):
    core = running.services.core
    agent_id = await deploy(core)
    session, _ = await core.create_session(ACTOR, agent_id)
    async with database.sessionmaker.begin() as s:
        await wallets_store.debit(s, ACTOR.workspace_id, "ai", Decimal(5), reason="test", ref=None)
    with pytest.raises(WalletEmpty):
        await core.post_message(ACTOR, agent_id, session.id, text="hello?")
    await top_up(database.sessionmaker, ACTOR.workspace_id, Decimal("1.5"))
    receipt = await core.post_message(ACTOR, agent_id, session.id, text="hello again")
    assert receipt.queued >= 0


async def test_concurrent_debits_cannot_overdraw_a_wallet(running, database):
    await running.services.core.ensure_actor(ACTOR)
    engine = database.new_engine(pool_size=10)
    maker = type(database.sessionmaker)(engine, expire_on_commit=False)

    async def debit() -> Decimal:
        async with maker.begin() as s:
            taken = await wallets_store.debit(
                s, ACTOR.workspace_id, "ai", Decimal("0.75"), reason="turn", ref=None
            )
            return taken.debited

    try:
        taken = await asyncio.gather(*(debit() for _ in range(10)))
    finally:
        await engine.dispose()
    async with database.sessionmaker() as s:
        balance = (await wallets_store.balances(s, ACTOR.workspace_id))["ai"]
    assert sum(taken) == Decimal("5.00")
    assert balance == Decimal(0)
