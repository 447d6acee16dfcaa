"""Search latency on a large event mirror: 1,000,000 events across 10,000 sessions.

Builds the mirror through the real schema (the Alembic migrations, so the index triggers of
migration 0002 fill the full-text index as the app's appends would), then times
`store.search.search_events` (the query behind `search_live_agent_sessions`) for one agent.

The mirror: 20 agents in 5 workspaces; the searched agent holds 30% of the sessions (the others
share the rest). Each session is a run of turns shaped like the runtime's: a user message, status
and span events, tool uses and results, one or two agent messages, idle. Message text is drawn
from a 30,000-word vocabulary with Zipf-distributed frequencies (English function words on top),
so terms range from very common to rare. The searches mix rare, medium, common and two-word
queries.

    python bench/search.py [--db sqlite|postgres|both] [--events 1000000] [--sessions 10000]
                           [--searches 300] [--postgres URL] [--explain]

Prints one line (progress and query plans go to stderr). PostgreSQL works in a schema of its
own, dropped afterwards; SQLite in a temporary file, removed afterwards. The whole run takes about
2.5 minutes on our 2-core machine; measured there (with other work running): sqlite p50 11.3 ms
p99 25.5 ms (built in 56 s); postgres p50 5.5 ms p99 24.9 ms (built in 82 s).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402

from store import search  # noqa: E402
from store.db import make_engine, make_sessionmaker  # noqa: E402
from store.migrate import upgrade  # noqa: E402

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
WORKSPACES = 5
AGENTS = 20
MAIN_SHARE = 0.30
VOCABULARY = 30_000
START = datetime(2026, 1, 1, tzinfo=UTC)
FUNCTION_WORDS = (
    "the to and of a in is it you that for on with this be are as have not but at or can "
    "will your i we an if from by so do what there all my they me was about would which "
    "when one more up out just has how their like also some then no here"
).split()
SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def vocabulary(rng: random.Random) -> list[str]:
    words = list(FUNCTION_WORDS)
    seen = set(words)
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class Text:
    """Zipf-distributed words (s = 1.05), drawn fast in bulk."""

    def __init__(self, rng: random.Random, words: list[str]) -> None:
        self.rng = rng
        self.words = words
        weights = [1 / (rank**1.05) for rank in range(1, len(self.words) + 1)]
        self.cumulative = list(itertools.accumulate(weights))
        self.pool: list[str] = []
        self.at = 0

    def sentence(self, low: int, high: int) -> str:
        n = self.rng.randint(low, high)
        if self.at + n > len(self.pool):
            self.pool = self.rng.choices(self.words, cum_weights=self.cumulative, k=200_000)
            self.at = 0
        chunk = self.pool[self.at : self.at + n]
        self.at += n
        return " ".join(chunk).capitalize() + "."

    def rank_of(self, word: str) -> int:
        return self.words.index(word) + 1


@dataclass
class Mirror:
    events: int
    sessions: int
    main_agent: str
    main_workspace: str
    main_events: int


def _turn(rng: random.Random, text: Text) -> list[tuple[str, dict[str, Any]]]:
    """One turn, as (type, data) pairs shaped like the runtime's events."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("user.message", {"content": [{"type": "text", "text": text.sentence(4, 40)}]}),
        ("session.status_running", {}),
        ("span.model_request_start", {}),
    ]
    for _ in range(rng.choice((0, 0, 1, 2))):
        events += [
            ("agent.tool_use", {"name": "bash", "input": {"command": "ls -la"}}),
            ("agent.tool_result", {"content": [{"type": "text", "text": "ok"}]}),
        ]
    for _ in range(rng.choice((1, 1, 2))):
        events.append(
            ("agent.message", {"content": [{"type": "text", "text": text.sentence(15, 120)}]})
        )
    events += [
        ("span.model_request_end", {"model_usage": {"input_tokens": 900, "output_tokens": 120}}),
        ("session.status_idle", {"stop_reason": {"type": "end_turn"}}),
    ]
    return events


def plan(total_sessions: int, rng: random.Random) -> tuple[list[tuple[str, str]], list[int]]:
    """(workspace, agent) per agent, and each session's agent index (the first agent holds
    MAIN_SHARE of the sessions)."""
    agents = [(f"ws_bench_{i % WORKSPACES}", f"agt_bench_{i:02d}") for i in range(AGENTS)]
    owners = [
        0 if rng.random() < MAIN_SHARE else rng.randrange(1, AGENTS) for _ in range(total_sessions)
    ]
    return agents, owners


def session_rows(
    total_events: int,
    owners: list[int],
    agents: list[tuple[str, str]],
    rng: random.Random,
    words: list[str],
) -> Iterator[tuple[dict[str, Any], list[tuple[int, str, str, str, datetime]]]]:
    """Each session's row and its events (seq, runtime id, type, data JSON, created_at), in
    time order: sessions start one after the other over the year, turns a minute apart."""
    text = Text(rng, words)
    per_session = total_events // len(owners)
    step = timedelta(seconds=365 * 24 * 3600 / len(owners))
    for n, owner in enumerate(owners):
        workspace, agent = agents[owner]
        started = START + step * n
        session = {
            "id": f"sess_bench_{n:06d}",
            "workspace_id": workspace,
            "deployed_agent_id": agent,
            "created_at": started,
        }
        events: list[tuple[int, str, str, str, datetime]] = []
        want = per_session + (total_events % len(owners) if n == len(owners) - 1 else 0)
        turn = 0
        while len(events) < want:
            for kind, data in _turn(rng, text):
                if len(events) == want:
                    break
                seq = len(events) + 1
                runtime_id = f"sevt_{n}_{seq}"
                stamp = started + timedelta(minutes=turn, milliseconds=seq)
                events.append((seq, runtime_id, kind, json.dumps({"type": kind, **data}), stamp))
            turn += 1
        yield session, events


async def create_parents(engine: AsyncEngine, agents: list[tuple[str, str]]) -> None:
    async with engine.begin() as conn:
        for workspace in sorted({w for w, _ in agents}):
            await conn.execute(
                text("INSERT INTO workspaces (id, name, created_at) VALUES (:id, '', :t)"),
                {"id": workspace, "t": START},
            )
        for workspace, agent in agents:
            await conn.execute(
                text(
                    "INSERT INTO deployed_agents (id, workspace_id, name, model, system_prompt,"
                    " tools, approval_required_tools, created_at, updated_at) VALUES"
                    " (:id, :w, 'bench', 'claude-sonnet-4-5', '', '[]', '[]', :t, :t)"
                ),
                {"id": agent, "w": workspace, "t": START},
            )


SESSION_INSERT = (
    "INSERT INTO agent_sessions (id, workspace_id, deployed_agent_id, status, source, title,"
    " last_event_seq, inbox_seq, turn_count, created_at, updated_at)"
    " VALUES (:id, :workspace_id, :deployed_agent_id, 'idle', 'dashboard', '', :last, 0, 0,"
    " :created_at, :created_at)"
)


async def build(engine: AsyncEngine, events: int, sessions: int, seed: int) -> Mirror:
    """Migrate, then load the mirror in batches (executemany on SQLite, COPY on PostgreSQL)."""
    await upgrade(engine)
    rng = random.Random(seed)
    agents, owners = plan(sessions, rng)
    await create_parents(engine, agents)
    sqlite = engine.dialect.name == "sqlite"
    batch_sessions: list[dict[str, Any]] = []
    batch_events: list[tuple[str, int, str, str, str, datetime]] = []
    main_events = 0
    loaded = 0
    started = time.perf_counter()

    async def flush() -> None:
        nonlocal batch_sessions, batch_events, loaded
        async with engine.begin() as conn:
            await conn.execute(text(SESSION_INSERT), batch_sessions)
            if sqlite:
                await conn.exec_driver_sql(
                    "INSERT INTO session_events (session_id, seq, runtime_event_id, type, data,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [(*row[:5], row[5].isoformat(sep=" ")) for row in batch_events],
                )
            else:
                raw = (await conn.get_raw_connection()).driver_connection
                await raw.copy_records_to_table(
                    "session_events",
                    records=batch_events,
                    columns=["session_id", "seq", "runtime_event_id", "type", "data", "created_at"],
                )
        loaded += len(batch_events)
        batch_sessions, batch_events = [], []
        log(f"  {loaded:,} events loaded ({time.perf_counter() - started:.0f} s)")

    for session, rows in session_rows(events, owners, agents, rng, vocabulary(random.Random(seed))):
        batch_sessions.append({**session, "last": len(rows)})
        batch_events.extend((session["id"], *row) for row in rows)
        if session["deployed_agent_id"] == agents[0][1]:
            main_events += len(rows)
        if len(batch_events) >= 50_000:
            await flush()
    if batch_sessions:
        await flush()
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("ANALYZE" if sqlite else "VACUUM ANALYZE")
    workspace, agent = agents[0]
    return Mirror(loaded, sessions, agent, workspace, main_events)


def queries(count: int, seed: int) -> list[str]:
    """Mixed terms by frequency rank: rare, medium, common, and two words together."""
    rng = random.Random(seed + 1)
    words = vocabulary(random.Random(seed))  # the same vocabulary the mirror was drawn from
    content = range(len(FUNCTION_WORDS), len(words))

    def pick(low: int, high: int) -> str:
        return words[rng.randrange(max(low, content.start), min(high, len(words)))]

    out = []
    for n in range(count):
        band = n % 10
        if band < 4:
            out.append(pick(3_000, 30_000))
        elif band < 7:
            out.append(pick(300, 3_000))
        elif band < 9:
            out.append(pick(0, 300))
        else:
            out.append(f"{pick(0, 1_000)} {pick(300, 5_000)}")
    rng.shuffle(out)
    return out


async def run_searches(engine: AsyncEngine, mirror: Mirror, terms: list[str]) -> list[float]:
    maker = make_sessionmaker(engine)
    timings = []
    for query in terms[:5]:  # warm the caches and the connection
        async with maker() as s:
            await search.search_events(
                s,
                workspace_id=mirror.main_workspace,
                agent_id=mirror.main_agent,
                terms=search.parse_query(query),
            )
    for query in terms:
        started = time.perf_counter()
        async with maker() as s:
            await search.search_events(
                s,
                workspace_id=mirror.main_workspace,
                agent_id=mirror.main_agent,
                terms=search.parse_query(query),
            )
        timings.append((time.perf_counter() - started) * 1000)
    return timings


async def explain(engine: AsyncEngine, mirror: Mirror, seed: int) -> None:
    """Print the plans of the real search statement for a rare, a medium and a common term."""
    words = vocabulary(random.Random(seed))
    picks = (("rare", 10_000), ("medium", 1_000), ("common", len(FUNCTION_WORDS) + 5))
    sqlite = engine.dialect.name == "sqlite"
    async with engine.connect() as conn:
        for label, rank in picks:
            statement, params = search.search_statement(
                engine.dialect.name,
                workspace_id=mirror.main_workspace,
                agent_id=mirror.main_agent,
                terms=search.parse_query(words[rank]),
                limit=20,
                window=search.DEFAULT_WINDOW,
            )
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, COSTS OFF) "
            rows = await conn.execute(text(prefix + str(statement)), params)
            lines = [str(r[-1]) if sqlite else r[0] for r in rows]
            log(f"plan ({label}: {words[rank]!r}):\n    " + "\n    ".join(lines))


async def bench_one(kind: str, args: argparse.Namespace) -> str:
    schema = directory = None
    if kind == "sqlite":
        directory = tempfile.mkdtemp(prefix="bench_search_")
        url = f"sqlite+aiosqlite:///{directory}/mirror.db"
        engine = make_engine(url)
    else:
        schema = f"bench_search_{uuid.uuid4().hex[:8]}"
        admin = make_engine(args.postgres)
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await admin.dispose()
        engine = make_engine(args.postgres, pool_size=2, search_path=schema)
    try:
        log(f"{kind}: building {args.events:,} events across {args.sessions:,} sessions")
        started = time.perf_counter()
        mirror = await build(engine, args.events, args.sessions, args.seed)
        built = time.perf_counter() - started
        terms = queries(args.searches, args.seed)
        if args.explain:
            await explain(engine, mirror, args.seed)
        timings = await run_searches(engine, mirror, terms)
        p50 = statistics.median(timings)
        p99 = statistics.quantiles(timings, n=100, method="inclusive")[98]
        log(f"{kind}: built in {built:.0f} s; searched agent holds {mirror.main_events:,} events")
        return f"{kind} p50 {p50:.1f} ms p99 {p99:.1f} ms (built in {built:.0f} s)"
    finally:
        await engine.dispose()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        if schema is not None:
            admin = make_engine(args.postgres)
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            await admin.dispose()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--explain", action="store_true", help="print query plans to stderr")
    return parser.parse_args(argv)


async def main(argv: list[str]) -> None:
    args = parse_args(argv)
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    results = [await bench_one(kind, args) for kind in kinds]
    print(
        f"search latency, {args.events:,} events / {args.sessions:,} sessions, "
        f"{args.searches} mixed searches for one agent: " + "; ".join(results)
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
