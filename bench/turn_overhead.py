"""What the app adds to a turn beyond the runtime's own time.

The fake managed-agents API (tests/fakes, real `anthropic` SDK over loopback HTTP) answers with
zero delay, from a process of its own (so its CPU is not counted as the app's). For each turn: app time = from `post_message` to the runner's `turn_ended`;
runtime time = from the runtime's `user.message` to its `session.status_idle` (its own
`processed_at` stamps, mirrored as the events' `created_at`). Overhead = app time - runtime time: claiming, the SDK round trips
(stream open, send), mirroring, billing, releasing.

    python bench/turn_overhead.py [--turns 200] [--postgres URL]

Prints one line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

import app as app_module  # noqa: E402
from router.types import Actor  # noqa: E402
from store.db import make_engine  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from tests.fakes.anthropic_api import FakeAnthropic  # noqa: E402

KEY = "sk-ant-bench"


class TimedRuntime:
    """Wraps the real adapter and adds up the time spent waiting on the runtime's API."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.waited = 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def _timed(self, coro):
        started = time.perf_counter()
        try:
            return await coro
        finally:
            self.waited += time.perf_counter() - started

    async def send_user_message(self, session_id, content):
        return await self._timed(self.inner.send_user_message(session_id, content))

    def stream(self, session_id):
        outer = self
        manager = self.inner.stream(session_id)

        class Timed:
            async def __aenter__(self):
                return await outer._timed(manager.__aenter__())

            async def __aexit__(self, *exc):
                return await outer._timed(manager.__aexit__(*exc))

        return Timed()


class TurnClock:
    """A TurnObserver that notes when each turn ended."""

    def __init__(self) -> None:
        self.ended: dict[str, asyncio.Future[float]] = {}

    def expect(self, session_id: str) -> asyncio.Future[float]:
        future = asyncio.get_running_loop().create_future()
        self.ended[session_id] = future
        return future

    def turn_started(self, ctx) -> None:
        pass

    def turn_item(self, ctx, item) -> None:
        pass

    def turn_ended(self, ctx, outcome: str) -> None:
        future = self.ended.get(ctx.session_id)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())


async def serve_fake() -> None:
    fake = FakeAnthropic(api_key=KEY)
    print(await fake.start(), flush=True)
    await asyncio.Event().wait()


async def run(turns: int, postgres: str | None) -> str:
    tmp = tempfile.mkdtemp()
    schema = None
    if postgres:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = make_engine(postgres)
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await admin.dispose()
        url = postgres
    else:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    engine = make_engine(url, search_path=schema)
    await upgrade(engine)
    fake = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-fake", stdout=asyncio.subprocess.PIPE
    )
    base = (await fake.stdout.readline()).decode().strip()
    settings = app_module.Settings(
        _env_file=None, database_url=url, anthropic_api_key=KEY, anthropic_base_url=base
    )
    from runtime.client import build_runtime

    timed = TimedRuntime(build_runtime(KEY, base))
    services = await app_module.build(settings, engine=engine, runtime=timed)
    clock = TurnClock()
    services.runner.observers.append(clock)
    core = services.core
    actor = Actor("bench", "u")
    agent = await core.deploy_agent(
        actor,
        name="bench",
        model="claude-sonnet-4-5",
        system="",
        approval_required_tools=[],
        slack=None,
    )
    overheads: list[float] = []
    own_work: list[float] = []
    session, _ = await core.create_session(actor, agent.id)
    try:
        for i in range(turns + 10):
            done = clock.expect(session.id)
            timed.waited = 0.0
            started = time.perf_counter()
            await core.post_message(actor, agent.id, session.id, text=f"turn {i}")
            ended = await asyncio.wait_for(done, 30)
            events, _ = await core.events(actor, agent.id, session.id, limit=20, descending=True)
            user = next(e for e in events if e.type == "user.message")
            idle = next(e for e in events if e.type == "session.status_idle")
            runtime_own = (idle.created_at - user.created_at).total_seconds()
            if i >= 10:  # warm-up: connections, caches
                overheads.append((ended - started) - runtime_own)
                own_work.append((ended - started) - runtime_own - timed.waited)
    finally:
        await services.close()
        fake.terminate()
        await fake.wait()
        if schema:
            admin = make_engine(postgres)
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await admin.dispose()
    p50, p99 = _percentiles(overheads)
    w50, w99 = _percentiles(own_work)
    db = "postgresql" if postgres else "sqlite"
    return (
        f"turn_overhead db={db} turns={len(overheads)} p50={p50:.1f}ms p99={p99:.1f}ms; "
        f"without the stream-open and send round trips p50={w50:.1f}ms p99={w99:.1f}ms "
        f"(app time minus the fake runtime's own time; one session, turn after turn)"
    )


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(v * 1000 for v in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--postgres", help="postgresql+asyncpg://... (default: SQLite)")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if args.serve_fake:
        asyncio.run(serve_fake())
        return
    print(asyncio.run(run(args.turns, args.postgres)))


if __name__ == "__main__":
    main()
