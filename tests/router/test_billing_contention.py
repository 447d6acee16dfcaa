"""A busy workspace's debits queue on its wallet row without taking a process's whole pool."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from router.billing import Billing, TurnUsage
from store.db import make_sessionmaker
from store.models import Wallet
from tests.conftest import TestDatabase
from tests.router.conftest import ACTOR, deploy
from tests.waiting import eventually


async def _blocked_by(database: TestDatabase, pid: int) -> int:
    async with database.engine.connect() as conn:
        return await conn.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
            {"pid": pid},
        )


async def test_debits_waiting_on_the_wallet_leave_connections_for_other_work(
    database: TestDatabase, running
) -> None:
    if database.kind != "postgres":
        pytest.skip("row locks and a pool of several connections are PostgreSQL's")
    core = running.services.core
    agent_id = await deploy(core)
    sessions = [(await core.create_session(ACTOR, agent_id))[0].id for _ in range(6)]
    engine = database.new_engine(pool_size=2)  # 4 connections with the overflow
    billing = Billing(make_sessionmaker(engine))
    usage = TurnUsage(input_tokens=1000, output_tokens=1000)
    wallet = select(Wallet).where(Wallet.workspace_id == ACTOR.workspace_id, Wallet.kind == "ai")
    try:
        async with database.engine.connect() as other_process:
            held = await other_process.begin()
            await other_process.execute(wallet.with_for_update())  # another process debiting
            holder = await other_process.scalar(text("SELECT pg_backend_pid()"))
            charges = [
                asyncio.create_task(
                    billing.charge_turn(
                        workspace_id=ACTOR.workspace_id,
                        session_id=session_id,
                        turn=1,
                        model="claude-sonnet-4-5",
                        usage=usage,
                    )
                )
                for session_id in sessions
            ]
            await eventually(lambda: _blocked_by(database, holder))  # queued behind the row
            async with asyncio.timeout(10), engine.connect() as conn:  # not a pool timeout
                assert await conn.scalar(text("SELECT 1")) == 1
            await held.rollback()
        costs = await asyncio.gather(*charges)
        async with database.sessionmaker() as s:
            balance = (await s.scalar(wallet)).balance_usd
    finally:
        await engine.dispose()
    assert all(cost and cost > 0 for cost in costs)
    assert balance == Decimal("5.00") - sum(costs)
