"""Store functions on both databases: race-free creation, idempotent mirror, keyset pages."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import func, select

from store import agents as agents_store
from store import events as events_store
from store import queue as queue_store
from store import receipts, sessions, workspaces
from store.events import NewEvent
from store.models import AgentSession, SessionEvent, Wallet, WalletLedger


async def _seed_agent(db, workspace_id: str = "ws1") -> str:
    async with db.sessionmaker.begin() as s:
        await workspaces.ensure_workspace(s, workspace_id, starting_credit=Decimal("5.00"))
        agent = await agents_store.create_agent(
            s,
            workspace_id=workspace_id,
            name="helper",
            model="claude-sonnet-4-5",
            system_prompt="be kind",
            tools=[],
            approval_required_tools=[],
            created_by="u1",
        )
        return agent.id


async def test_fifty_concurrent_first_messages_of_a_thread_give_one_session(database):
    agent_id = await _seed_agent(database)
    engine = database.new_engine(pool_size=10)
    maker = type(database.sessionmaker)(engine, expire_on_commit=False)

    async def one_call() -> tuple[str, bool]:
        async with maker.begin() as s:
            row, created = await sessions.get_or_create_slack_session(
                s,
                workspace_id="ws1",
                deployed_agent_id=agent_id,
                team_id="T1",
                channel_id="C1",
                thread_ts="1700000000.000100",
            )
            return row.id, created

    try:
        results = await asyncio.gather(*(one_call() for _ in range(50)))
    finally:
        await engine.dispose()
    ids = {sid for sid, _ in results}
    assert len(ids) == 1
    assert sum(created for _, created in results) == 1
    async with database.sessionmaker() as s:
        count = await s.scalar(select(func.count()).select_from(AgentSession))
        row = await s.get(AgentSession, ids.pop())
    assert count == 1
    assert row.slack_conversation_key == "T1:C1:1700000000.000100"
    assert row.source == "slack" and row.status == "idle"


async def test_same_thread_for_another_agent_is_another_session(database):
    first = await _seed_agent(database)
    second = await _seed_agent(database)
    async with database.sessionmaker.begin() as s:
        a, _ = await sessions.get_or_create_slack_session(
            s,
            workspace_id="ws1",
            deployed_agent_id=first,
            team_id="T",
            channel_id="C",
            thread_ts="1.1",
        )
        b, _ = await sessions.get_or_create_slack_session(
            s,
            workspace_id="ws1",
            deployed_agent_id=second,
            team_id="T",
            channel_id="C",
            thread_ts="1.1",
        )
        again, created = await sessions.get_or_create_slack_session(
            s,
            workspace_id="ws1",
            deployed_agent_id=first,
            team_id="T",
            channel_id="C",
            thread_ts="1.1",
        )
    assert a.id != b.id
    assert again.id == a.id and not created


async def _new_session(database, agent_id: str) -> str:
    async with database.sessionmaker.begin() as s:
        row = await sessions.create_session(
            s, workspace_id="ws1", deployed_agent_id=agent_id, source="dashboard"
        )
        return row.id


async def test_append_is_idempotent_on_the_runtime_event_id(database):
    session_id = await _new_session(database, await _seed_agent(database))
    batch = [NewEvent(f"evt_{i}", "agent.message", {"i": i}) for i in range(3)]
    async with database.sessionmaker.begin() as s:
        first = await events_store.append_events(s, session_id, batch)
    async with database.sessionmaker.begin() as s:
        again = await events_store.append_events(
            s, session_id, [*batch[1:], NewEvent("evt_3", "session.status_idle", {})]
        )
    assert [e.seq for e in first] == [1, 2, 3]
    assert [(e.seq, e.runtime_event_id) for e in again] == [(4, "evt_3")]
    async with database.sessionmaker() as s:
        page, more = await events_store.list_events(s, session_id, limit=10)
    assert [(e.seq, e.runtime_event_id) for e in page] == [
        (1, "evt_0"),
        (2, "evt_1"),
        (3, "evt_2"),
        (4, "evt_3"),
    ]
    assert page[0].data == {"i": 0} and not more


async def test_concurrent_appenders_get_gapless_unique_seqs(database):
    session_id = await _new_session(database, await _seed_agent(database))
    engine = database.new_engine(pool_size=10)
    maker = type(database.sessionmaker)(engine, expire_on_commit=False)

    async def writer(w: int) -> None:
        for i in range(10):
            # every event is offered by two writers: the mirror must keep it once
            event = NewEvent(f"evt_{(w // 2)}_{i}", "agent.message", {"w": w})
            async with maker.begin() as s:
                await events_store.append_events(s, session_id, [event])

    try:
        await asyncio.gather(*(writer(w) for w in range(20)))
    finally:
        await engine.dispose()
    async with database.sessionmaker() as s:
        rows = list(
            await s.scalars(select(SessionEvent).where(SessionEvent.session_id == session_id))
        )
        last = (await s.get(AgentSession, session_id)).last_event_seq
    seqs = sorted(e.seq for e in rows)
    assert seqs == list(range(1, 101))
    assert len({e.runtime_event_id for e in rows}) == 100
    assert last == 100


async def test_event_pages_are_keyset_in_both_directions(database):
    session_id = await _new_session(database, await _seed_agent(database))
    async with database.sessionmaker.begin() as s:
        await events_store.append_events(
            s, session_id, [NewEvent(f"e{i}", "agent.message", {}) for i in range(1, 8)]
        )
    async with database.sessionmaker() as s:
        page1, more1 = await events_store.list_events(s, session_id, limit=3)
        page2, more2 = await events_store.list_events(s, session_id, limit=3, after=page1[-1].seq)
        page3, more3 = await events_store.list_events(s, session_id, limit=3, after=page2[-1].seq)
        newest, more_old = await events_store.list_events(s, session_id, limit=2, descending=True)
        older, _ = await events_store.list_events(
            s, session_id, limit=10, before=newest[-1].seq, descending=True
        )
        window, _ = await events_store.list_events(s, session_id, limit=10, after=2, before=5)
    assert [e.seq for e in page1] == [1, 2, 3] and more1
    assert [e.seq for e in page2] == [4, 5, 6] and more2
    assert [e.seq for e in page3] == [7] and not more3
    assert [e.seq for e in newest] == [7, 6] and more_old
    assert [e.seq for e in older] == [5, 4, 3, 2, 1]
    assert [e.seq for e in window] == [3, 4]


async def test_slack_receipt_takes_an_event_id_once_even_under_races(database):
    engine = database.new_engine(pool_size=10)
    maker = type(database.sessionmaker)(engine, expire_on_commit=False)

    async def take() -> bool:
        async with maker.begin() as s:
            return await receipts.record_slack_event(s, "Ev123", "T1")

    try:
        results = await asyncio.gather(*(take() for _ in range(10)))
    finally:
        await engine.dispose()
    assert results.count(True) == 1


async def test_queue_keeps_order_and_dedupes_one_slack_message(database):
    session_id = await _new_session(database, await _seed_agent(database))
    async with database.sessionmaker.begin() as s:
        a = await queue_store.enqueue(s, session_id, text="one", dedupe_key="slack:T:C:1.1")
        dup = await queue_store.enqueue(s, session_id, text="one", dedupe_key="slack:T:C:1.1")
        b = await queue_store.enqueue(s, session_id, text="two")
    assert a is not None and b is not None and dup is None
    async with database.sessionmaker.begin() as s:
        first = await queue_store.next_queued(s, session_id)
        assert first.text == "one"
        await queue_store.mark_sent(s, first.id)
        counts = await sessions.queued_counts(s, [session_id])
        second = await queue_store.next_queued(s, session_id)
    assert second.text == "two" and counts == {session_id: 1}


async def test_turn_claim_admits_one_runner(database):
    session_id = await _new_session(database, await _seed_agent(database))
    async with database.sessionmaker.begin() as s:
        assert not await sessions.claim_turn(s, session_id, runner_id="r0", lease_until=_later()), (
            "nothing queued: nothing to claim"
        )
        await queue_store.enqueue(s, session_id, text="hi")
    engine = database.new_engine(pool_size=10)
    maker = type(database.sessionmaker)(engine, expire_on_commit=False)

    async def claim(i: int) -> bool:
        async with maker.begin() as s:
            return await sessions.claim_turn(s, session_id, runner_id=f"r{i}", lease_until=_later())

    try:
        wins = await asyncio.gather(*(claim(i) for i in range(10)))
    finally:
        await engine.dispose()
    assert wins.count(True) == 1
    async with database.sessionmaker() as s:
        row = await s.get(AgentSession, session_id)
    assert row.status == "running" and row.runner_id == f"r{wins.index(True)}"


async def test_new_workspace_starts_with_both_wallets_once(database):
    async def ensure() -> bool:
        async with database.sessionmaker.begin() as s:
            return await workspaces.ensure_workspace(s, "ws9", starting_credit=Decimal("5.00"))

    results = [await ensure(), await ensure()]
    async with database.sessionmaker() as s:
        wallets = list(await s.scalars(select(Wallet).where(Wallet.workspace_id == "ws9")))
        ledger = await s.scalar(select(func.count()).select_from(WalletLedger))
    assert results == [True, False]
    assert sorted((w.kind, w.balance_usd) for w in wallets) == [
        ("ai", Decimal("5.000000")),
        ("data", Decimal("5.000000")),
    ]
    assert ledger == 2


async def test_channel_binding_wins_over_team_default(database):
    default_agent = await _seed_agent(database)
    channel_agent = await _seed_agent(database)
    async with database.sessionmaker.begin() as s:
        await agents_store.bind_slack(
            s,
            workspace_id="ws1",
            agent_id=default_agent,
            team_id="T1",
            channel_ids=[],
            team_default=True,
        )
        await agents_store.bind_slack(
            s,
            workspace_id="ws1",
            agent_id=channel_agent,
            team_id="T1",
            channel_ids=["C9"],
            team_default=False,
        )
    async with database.sessionmaker() as s:
        in_channel = await agents_store.resolve_slack_agent(s, team_id="T1", channel_id="C9")
        elsewhere = await agents_store.resolve_slack_agent(s, team_id="T1", channel_id="C1")
        dm = await agents_store.resolve_slack_agent(s, team_id="T1", channel_id=None)
        other_team = await agents_store.resolve_slack_agent(s, team_id="T2", channel_id="C9")
    assert in_channel.id == channel_agent
    assert elsewhere.id == default_agent and dm.id == default_agent
    assert other_team is None


def _later():
    from datetime import timedelta

    from store.models import utcnow

    return utcnow() + timedelta(seconds=60)


async def test_a_slack_team_bound_in_one_workspace_cannot_be_taken_by_another(database):
    mine = await _seed_agent(database, "ws_a")
    theirs = await _seed_agent(database, "ws_b")
    async with database.sessionmaker.begin() as s:
        assert await agents_store.bind_slack(
            s,
            workspace_id="ws_a",
            agent_id=mine,
            team_id="T1",
            channel_ids=["C1"],
            team_default=True,
        )
    async with database.sessionmaker.begin() as s:
        taken = await agents_store.bind_slack(
            s,
            workspace_id="ws_b",
            agent_id=theirs,
            team_id="T1",
            channel_ids=["C1"],
            team_default=True,
        )
    assert not taken
    async with database.sessionmaker() as s:
        assert (await agents_store.resolve_slack_agent(s, team_id="T1", channel_id="C1")).id == mine
        assert (await agents_store.resolve_slack_agent(s, team_id="T1", channel_id=None)).id == mine


async def test_concurrent_binds_of_one_channel_in_a_workspace_settle_on_one_agent(database):
    agents = [await _seed_agent(database) for _ in range(5)]
    engine = database.new_engine(pool_size=10)
    maker = type(database.sessionmaker)(engine, expire_on_commit=False)

    async def bind(agent_id: str) -> bool:
        async with maker.begin() as s:
            return await agents_store.bind_slack(
                s,
                workspace_id="ws1",
                agent_id=agent_id,
                team_id="T1",
                channel_ids=["C1"],
                team_default=False,
            )

    try:
        results = await asyncio.gather(*(bind(a) for a in agents))
    finally:
        await engine.dispose()
    assert all(results)
    async with database.sessionmaker() as s:
        bindings = [b for a in agents for b in await agents_store.list_bindings(s, a)]
    assert len(bindings) == 1 and bindings[0].deployed_agent_id in agents
