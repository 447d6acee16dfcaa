"""How fast does `/slack/events` acknowledge? One result line.

    python bench/slack_ack.py [sqlite|postgres] [--rate 200] [--seconds 5] [--burst 2000] [--turns]

Starts the real app (SQLite file by default, or a fresh PostgreSQL schema at TEST_POSTGRES_URL)
with the local fakes of Slack and Anthropic, binds an agent, then a load process sends signed DM
events (each one a new thread: receipt, session get-or-create and queued message, the whole ack
path) at a fixed rate and reports ack latency p50/p99; then a burst at full speed for events/s.
The same two phases run against a bare aiohttp handler that only verifies the signature, in the
same run, and the line ends with the ratios.

By default the turns are not run (`--turns` runs them against the fake runtime): the figure is
the ack path, not the fake agent competing for the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SECRET = "bench-signing-secret"


# -- the load process ------------------------------------------------------------------------


def _signed(body: str) -> dict[str, str]:
    from slack_sdk.signature import SignatureVerifier

    ts = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body),
    }


_serial = itertools.count(1)


def _bodies(count: int, run: str) -> list[tuple[bytes, dict[str, str]]]:
    """Signed DM events, each starting a thread of its own (a new session)."""
    out = []
    for _ in range(count):
        n = next(_serial)
        ts = f"{1700000000 + n}.{n:06d}"
        envelope = {
            "type": "event_callback",
            "team_id": "T1",
            "api_app_id": "A0TEST",
            "event_id": f"Ev{run}{n}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": True}],
            "event": {
                "type": "message",
                "channel": "D1",
                "channel_type": "im",
                "user": "U1",
                "text": f"hello {n}",
                "ts": ts,
                "event_ts": ts,
            },
        }
        body = json.dumps(envelope)
        out.append((body.encode(), _signed(body)))
    return out


async def _load(url: str, rate: float, seconds: float, burst: int, run: str) -> dict[str, Any]:
    import aiohttp

    fixed = _bodies(int(rate * seconds), run + "f")
    fast = _bodies(burst, run + "b")
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(body: bytes, headers: dict[str, str], record: bool) -> None:
            nonlocal errors
            start = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
            if record:
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(one(b, h, False) for b, h in _bodies(20, run + "w")))  # warm up
        t0 = time.perf_counter()
        tasks = []
        for n, (body, headers) in enumerate(fixed):
            delay = t0 + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body, headers, True)))
        await asyncio.gather(*tasks)
        fixed_elapsed = time.perf_counter() - t0

        sem = asyncio.Semaphore(32)

        async def bounded(body: bytes, headers: dict[str, str]) -> None:
            async with sem:
                await one(body, headers, False)

        t1 = time.perf_counter()
        await asyncio.gather(*(bounded(b, h) for b, h in fast))
        burst_elapsed = time.perf_counter() - t1
    latencies.sort()
    return {
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "achieved": len(fixed) / fixed_elapsed,
        "max": burst / burst_elapsed,
        "errors": errors,
    }


def _load_process(url: str, rate: float, seconds: float, burst: int, run: str, out: Any) -> None:
    out.send(asyncio.run(_load(url, rate, seconds, burst, run)))
    out.close()


def measure(url: str, rate: float, seconds: float, burst: int) -> tuple[Any, Any]:
    """Run the load in its own process, so client and server do not share a core."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_load_process, args=(url, rate, seconds, burst, uuid.uuid4().hex[:6], send)
    )
    proc.start()
    return proc, receive


async def wait_result(proc: Any, receive: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(None, receive.recv)
    await loop.run_in_executor(None, proc.join)
    return result


# -- the servers -----------------------------------------------------------------------------


async def start_site(app: Any) -> tuple[Any, str]:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/slack/events"


def bare_app() -> Any:
    """What the budget calls "a bare aiohttp handler that checks the Slack signature"."""
    from aiohttp import web

    from bot.http import signature_problem

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        problem = signature_problem(
            SECRET,
            body,
            request.headers.get("X-Slack-Request-Timestamp"),
            request.headers.get("X-Slack-Signature"),
            time.time(),
        )
        return web.Response(status=401 if problem else 200)

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    return app


async def database(kind: str, tmp: str) -> tuple[Any, str, Any]:
    """(engine, url, cleanup) for a fresh database, migrated."""
    from sqlalchemy import text

    from store.db import make_engine
    from store.migrate import upgrade

    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        engine = make_engine(url)

        async def nothing() -> None:
            return None

        return engine, url, nothing
    url = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, pool_size=10, search_path=schema)
    await upgrade(engine)

    async def drop() -> None:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()

    return engine, url, drop


async def main(args: argparse.Namespace) -> str:
    import app as app_module
    from router.sessions import SlackBindingRequest
    from router.types import Actor
    from tests.fakes.anthropic_api import FakeAnthropic
    from tests.fakes.slack_api import FakeSlack

    with tempfile.TemporaryDirectory() as tmp:
        slack = await FakeSlack().start()
        anthropic = FakeAnthropic()
        await anthropic.start()
        engine, url, drop = await database(args.db, tmp)
        settings = app_module.Settings(
            _env_file=None,
            database_url=url,
            slack_signing_secret=SECRET,
            slack_bot_token=slack.team("T1").bot_token,
            slack_api_url=slack.api_url,
            anthropic_api_key=anthropic.api_key,
            anthropic_base_url=anthropic.base_url,
        )
        services = await app_module.build(settings, engine=engine)
        if not args.turns:
            services.runner.kick = lambda session_id: None  # measure the ack path alone
        await services.core.deploy_agent(
            Actor("bench", "bench"),
            name="Bench",
            model="claude-sonnet-4-5",
            system="",
            approval_required_tools=[],
            slack=SlackBindingRequest("T1", (), True),
        )
        app_runner, app_url = await start_site(app_module.build_web_app(services))
        bare_runner, bare_url = await start_site(bare_app())
        try:
            results = {}
            for name, target in (("bare", bare_url), ("app", app_url)):
                proc, receive = measure(target, args.rate, args.seconds, args.burst)
                results[name] = await wait_result(proc, receive)
        finally:
            await app_runner.cleanup()
            await bare_runner.cleanup()
            await services.close()
            await drop()
            await anthropic.close()
            await slack.stop()
    a, b = results["app"], results["bare"]
    return (
        f"slack_ack db={args.db} turns={'on' if args.turns else 'off'} rate={args.rate:g}/s "
        f"n={int(args.rate * args.seconds)}: "
        f"app ack p50={a['p50']:.1f}ms p99={a['p99']:.1f}ms at {a['achieved']:.0f} ev/s, "
        f"max {a['max']:.0f} ev/s | "
        f"bare p50={b['p50']:.1f}ms p99={b['p99']:.1f}ms at {b['achieved']:.0f} ev/s, "
        f"max {b['max']:.0f} ev/s | "
        f"app/bare p99 x{a['p99'] / b['p99']:.1f}, throughput x{a['max'] / b['max']:.2f}"
        + (f" | errors app={a['errors']} bare={b['errors']}" if a["errors"] or b["errors"] else "")
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", nargs="?", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s (default 200)")
    parser.add_argument("--seconds", type=float, default=5.0, help="fixed-rate phase length")
    parser.add_argument("--burst", type=int, default=2000, help="events in the full-speed phase")
    parser.add_argument("--turns", action="store_true", help="also run the turns")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(asyncio.run(main(parse_args(sys.argv[1:]))))
