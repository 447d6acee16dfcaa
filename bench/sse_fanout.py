"""SSE fan-out: N watchers on one session while M events stream into it.

The app runs in this process (the whole `app.build_web_app` on a free loopback port, SQLite or
PostgreSQL). The watchers run in a process of their own (so their parsing does not eat the
server's CPU): N `GET .../stream` connections over real HTTP. Once all are connected, this process
produces M events at `--rate` per second through the turn runner's own mirror-and-publish path
(`router.turns.append_app_event`: one mirror transaction, then the live bus), each stamped with
the wall-clock time just before it was produced. Lag = when a watcher read the frame minus that
stamp (mirror write + fan-out + socket), over every delivery.

    python bench/sse_fanout.py [--watchers 10,100,1000] [--events 100] [--rate 20] [--postgres URL]

Prints one line per N: delivered/expected, lag p50/p99, and the server's work during the live
phase (mirror reads and frame encodings: both should not grow with N).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import resource
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import text  # noqa: E402

import app as app_module  # noqa: E402
from dashboard_api.context import DASHBOARD  # noqa: E402
from router.turns import append_app_event  # noqa: E402
from router.types import Actor  # noqa: E402
from store.db import make_engine  # noqa: E402
from store.migrate import upgrade  # noqa: E402

SENT = re.compile(rb'"sent":([0-9.]+)')
ACTOR = Actor("bench", "watcher")


# -- the watchers' process --------------------------------------------------------------------


async def watch_all(url: str, token: str, watchers: int, events: int, timeout: float) -> None:
    """Open `watchers` streams, say `ready`, read until each saw `events` events; print JSON."""
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=0)
    lags: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        responses = await asyncio.gather(
            *(
                http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None))
                for _ in range(watchers)
            )
        )
        assert all(r.status == 200 for r in responses), [r.status for r in responses][:3]
        print("ready", flush=True)

        async def read(response: aiohttp.ClientResponse) -> None:
            seen = 0
            buffer = b""
            try:
                async for chunk in response.content.iter_any():
                    now = time.time()
                    buffer += chunk
                    frames = buffer.split(b"\n\n")
                    buffer = frames.pop()
                    for frame in frames:
                        match = SENT.search(frame) if frame.startswith(b"id:") else None
                        if match:
                            lags.append(now - float(match.group(1)))
                            seen += 1
                    if seen >= events:
                        break
            finally:
                response.close()

        cpu = time.process_time()
        await asyncio.wait([asyncio.create_task(read(r)) for r in responses], timeout=timeout)
        cpu = time.process_time() - cpu
    print(json.dumps({"delivered": len(lags), "lags": lags, "cpu": cpu}), flush=True)


# -- the server's process ---------------------------------------------------------------------


async def open_database(postgres: str | None) -> tuple[str, str | None, object]:
    if not postgres:
        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
        return url, None, make_engine(url)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(postgres)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    await admin.dispose()
    return postgres, schema, make_engine(postgres, search_path=schema)


async def drop_schema(postgres: str, schema: str) -> None:
    admin = make_engine(postgres)
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()


async def one_round(services, hub, base_url: str, token: str, args, watchers: int) -> str:
    core = services.core
    agent = (await core.list_agents(ACTOR, limit=1, cursor=None)).items[0]
    session, _ = await core.create_session(ACTOR, agent.id)
    url = f"{base_url}/dashboard/agents/{agent.id}/sessions/{session.id}/stream"
    reads_at_start = hub.stats.mirror_reads
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--watch",
        url,
        "--token",
        token,
        "--watchers",
        str(watchers),
        "--events",
        str(args.events),
        "--timeout",
        str(args.events / args.rate + 30),
        stdout=asyncio.subprocess.PIPE,
        limit=2**30,
    )
    line = await asyncio.wait_for(client.stdout.readline(), 120)
    assert line.strip() == b"ready", line
    # Let the replays (one empty mirror read per connect) finish before the live phase.
    while hub.stats.mirror_reads < reads_at_start + watchers:  # noqa: ASYNC110 (a bench)
        await asyncio.sleep(0.01)
    reads_before, encoded_before = hub.stats.mirror_reads, hub.stats.encoded
    cpu = time.process_time()
    interval = 1 / args.rate
    started = time.perf_counter()
    for n in range(args.events):
        await append_app_event(
            services.runner, session.id, "app.bench", {"n": n, "sent": time.time()}
        )
        delay = started + (n + 1) * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    out, _ = await client.communicate()
    cpu = time.process_time() - cpu
    result = json.loads(out.splitlines()[-1])
    lags = sorted(v * 1000 for v in result["lags"])
    expected = watchers * args.events
    p50 = statistics.median(lags) if lags else float("nan")
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else float("nan")
    db = "postgresql" if args.postgres else "sqlite"
    return (
        f"sse_fanout db={db} watchers={watchers} events={args.events} rate={args.rate:g}/s "
        f"delivered={result['delivered']}/{expected} lag p50={p50:.1f}ms p99={p99:.1f}ms "
        f"live mirror_reads={hub.stats.mirror_reads - reads_before} "
        f"encodings={hub.stats.encoded - encoded_before} "
        f"cpu server={cpu:.2f}s watchers={result['cpu']:.2f}s"
    )


async def run(args) -> None:
    url, schema, engine = await open_database(args.postgres)
    await upgrade(engine)
    settings = app_module.Settings(
        _env_file=None, database_url=url, supabase_jwt_secret=secrets.token_urlsafe(32)
    )
    services = await app_module.build(settings, engine=engine)
    web_app = app_module.build_web_app(services)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    token = app_module.make_token(settings, ACTOR.workspace_id, ACTOR.user_id, 3600)
    await services.core.deploy_agent(
        ACTOR,
        name="bench",
        model="claude-sonnet-4-5",
        system="",
        approval_required_tools=[],
        slack=None,
    )
    try:
        for watchers in args.watchers:
            line = await one_round(
                services, web_app[DASHBOARD].hub, base_url, token, args, watchers
            )
            print(line, flush=True)
    finally:
        await runner.cleanup()
        await services.close()
        if schema:
            await drop_schema(args.postgres, schema)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", default="10,100,1000", help="comma-separated N values")
    parser.add_argument("--events", type=int, default=100, help="M events per round")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--postgres", help="postgresql+asyncpg://... (default: SQLite)")
    parser.add_argument("--watch", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.watch:
        asyncio.run(
            watch_all(args.watch, args.token, int(args.watchers), args.events, args.timeout)
        )
        return
    args.watchers = [int(n) for n in args.watchers.split(",")]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
