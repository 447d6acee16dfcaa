"""Several `python app.py` processes on one PostgreSQL behave as one (issue 8), small enough for
CI: two processes, 20 Slack threads of 3 messages sent round-robin, a share of the events
retried by "Slack" to the other process, and one process killed with SIGKILL in the middle of a
turn, whose session the other one takes over once a short lease has run out.

The full-size runs, with the figures, are `bench/replicas.py` and `bench/faults.py` (the same
machinery: `bench/cluster.py`). PostgreSQL only: processes share a database only there (SQLite
is one process's file with one writer connection).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from bench.cluster import (
    SERVER_URL,
    BenchSlack,
    LoadPlan,
    Replicas,
    SlackSender,
    app_env,
    bind_agent,
    create_database,
    plan_load,
    settle,
    tally,
)
from store.db import make_engine
from store.models import AgentSession
from tests.fakes.anthropic_api import FakeAnthropic
from tests.waiting import eventually

pytestmark = pytest.mark.postgres


async def _runner_pid(engine, key: str) -> int:
    """The pid of the process running the turn of the thread `key` (runner ids hold it)."""

    async def runner_id() -> str | None:
        async with engine.connect() as conn:
            return await conn.scalar(
                select(AgentSession.runner_id).where(AgentSession.slack_conversation_key == key)
            )

    return int((await eventually(runner_id)).split("_")[1])


async def test_two_processes_answer_each_message_once_through_retries_and_a_kill(
    tmp_path: Path,
) -> None:
    slack = await BenchSlack().start()
    anthropic = FakeAnthropic()
    await anthropic.start()
    database = await create_database(SERVER_URL, prefix="e2e")
    engine = make_engine(database.url, pool_size=2)
    env = app_env(database.url, slack, anthropic, lease_seconds=2.0, recover_every=0.5)
    replicas = Replicas(2, env, tmp_path)
    try:
        await replicas.start()
        await bind_agent(replicas[0])
        plan = plan_load(20, 3, slow_threads=1, slow_seconds=0.3)
        first = LoadPlan(plan.threads, plan.messages, [m for m in plan.order if m.k == 0])
        then = LoadPlan(plan.threads, plan.messages, [m for m in plan.order if m.k > 0])
        victim = plan.messages[0]  # thread 0 answers slowly: its turn is easy to catch
        async with SlackSender(replicas, rate=None, retry_share=0.2) as sender:
            await sender.run(first)
            sent = lambda: anthropic.sent_events(event_type="user.message")  # noqa: E731
            await eventually(lambda: any(victim.text in str(e) for e in sent()))
            pid = await _runner_pid(engine, f"T1:{victim.channel}:{victim.ts}")
            killed = replicas.index_of_pid(pid)
            assert killed is not None
            replicas.kill(killed)
            await sender.run(then)
        await settle(engine, slack, anthropic, plan, timeout=60)
        result = await tally(engine, slack, anthropic, plan)
        stats = sender.stats
    finally:
        await replicas.stop()
        await engine.dispose()
        await database.drop()
        await anthropic.close()
        await slack.stop()
    assert stats.deliberate_retries > 0 and stats.undelivered == 0
    assert result.sessions == 20, result.summary()
    assert result.replies == 60 and result.lost == 0, result.lost_examples
    assert result.duplicates == 0, result.duplicate_examples
    assert result.partial == 0, "a half-streamed answer of the killed process is completed"
    assert result.mirror_user_messages == 60 and result.mirror_duplicates == 0
    assert result.runtime_duplicates == 0 and result.runtime_missing == 0
    assert result.out_of_order == 0
