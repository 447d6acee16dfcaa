"""Full-text search over the mirror, on both databases: what is indexed, ranking, snippets,
scoping to one agent of one workspace, and the index following appends and deletes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete

from store import agents as agents_store
from store import events as events_store
from store import search, sessions, workspaces
from store.events import NewEvent
from store.models import AgentSession
from store.search import SearchTerms, parse_query

T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def _agent(db, workspace_id: str = "ws1") -> str:
    async with db.sessionmaker.begin() as s:
        await workspaces.ensure_workspace(s, workspace_id, starting_credit=Decimal("5.00"))
        agent = await agents_store.create_agent(
            s,
            workspace_id=workspace_id,
            name="helper",
            model="claude-sonnet-4-5",
            system_prompt="",
            tools=[],
            approval_required_tools=[],
            created_by="u1",
        )
        return agent.id


async def _session(db, agent_id: str, workspace_id: str = "ws1") -> str:
    async with db.sessionmaker.begin() as s:
        row = await sessions.create_session(
            s, workspace_id=workspace_id, deployed_agent_id=agent_id, source="dashboard"
        )
        return row.id


def _message(kind: str, text: str, n: int, **extra: Any) -> NewEvent:
    data = {"type": kind, "id": f"ev{n}", "content": [{"type": "text", "text": text}], **extra}
    return NewEvent(f"ev{n}", kind, data, T0 + timedelta(seconds=n))


async def _append(db, session_id: str, events: list[NewEvent]) -> None:
    async with db.sessionmaker.begin() as s:
        await events_store.append_events(s, session_id, events)


async def _search(db, agent_id: str, query: str, workspace_id: str = "ws1", **kw: Any):
    async with db.sessionmaker() as s:
        return await search.search_events(
            s, workspace_id=workspace_id, agent_id=agent_id, terms=parse_query(query), **kw
        )


async def test_messages_are_found_by_their_words_with_a_marked_snippet(database):
    agent = await _agent(database)
    sid = await _session(database, agent)
    await _append(
        database,
        sid,
        [
            _message("user.message", "Please check the invoice from Acme for November", 1),
            _message("agent.message", "The Acme invoice totals 1,200 dollars.", 2),
            _message("agent.message", "Nothing to do with it.", 3),
        ],
    )
    hits = await _search(database, agent, "invoice acme")
    assert {h.seq for h in hits} == {1, 2}
    assert all(h.session_id == sid and h.score > 0 for h in hits)
    by_seq = {h.seq: h for h in hits}
    assert "**invoice**" in by_seq[1].snippet.lower()
    assert "**acme**" in by_seq[2].snippet.lower()
    assert by_seq[2].created_at == T0 + timedelta(seconds=2)


async def test_stemming_matches_other_forms_of_a_word(database):
    agent = await _agent(database)
    sid = await _session(database, agent)
    await _append(database, sid, [_message("agent.message", "The deploy is running now", 1)])
    assert [h.seq for h in await _search(database, agent, "runs")] == [1]


async def test_the_better_match_ranks_first_and_ties_go_to_the_newer_event(database):
    agent = await _agent(database)
    sid = await _session(database, agent)
    filler = " ".join(["weather report for the coast"] * 8)
    await _append(
        database,
        sid,
        [
            _message("agent.message", f"{filler} and a single mention of kubernetes", 1),
            _message("agent.message", "kubernetes kubernetes: the kubernetes cluster", 2),
            _message("agent.message", "tie breaker alpha", 3),
            _message("agent.message", "tie breaker alpha", 4),
            _message("agent.message", "unrelated text about lunch", 5),
        ],
    )
    assert [h.seq for h in await _search(database, agent, "kubernetes")] == [2, 1]
    assert [h.seq for h in await _search(database, agent, "tie breaker")] == [4, 3]


async def test_every_word_and_quoted_phrase_must_match(database):
    agent = await _agent(database)
    sid = await _session(database, agent)
    await _append(
        database,
        sid,
        [
            _message("user.message", "the red car is fast", 1),
            _message("user.message", "a fast red bicycle and a car", 2),
            _message("user.message", "the red bicycle", 3),
        ],
    )
    assert {h.seq for h in await _search(database, agent, "red car")} == {1, 2}
    assert [h.seq for h in await _search(database, agent, '"red car"')] == [1]
    assert [h.seq for h in await _search(database, agent, 'bicycle "fast red"')] == [2]


async def test_tool_uses_and_other_events_are_not_indexed(database):
    agent = await _agent(database)
    sid = await _session(database, agent)
    await _append(
        database,
        sid,
        [
            NewEvent(
                "t1",
                "agent.tool_use",
                {"type": "agent.tool_use", "name": "bash", "input": {"command": "echo zebra"}},
            ),
            NewEvent("t2", "app.error", {"type": "app.error", "message": "zebra failure"}),
            NewEvent("t3", "session.status_idle", {"type": "session.status_idle"}),
            _message("agent.message", "a zebra crossing", 4),
        ],
    )
    assert [h.seq for h in await _search(database, agent, "zebra")] == [4]


async def test_string_content_and_odd_blocks_index_only_the_text(database):
    agent = await _agent(database)
    sid = await _session(database, agent)
    blocks = [
        "stray string block",
        {"type": "image", "source": {"type": "base64", "data": "walrus"}},
        {"type": "text", "text": "first walrus"},
        {"type": "text", "text": "second line"},
        7,
    ]
    await _append(
        database,
        sid,
        [
            NewEvent("a", "user.message", {"type": "user.message", "content": "plain walrus text"}),
            NewEvent("b", "agent.message", {"type": "agent.message", "content": blocks}),
            NewEvent("c", "agent.message", {"type": "agent.message"}),
            NewEvent("d", "agent.message", {"type": "agent.message", "content": None}),
        ],
    )
    hits = await _search(database, agent, "walrus")
    assert sorted(h.seq for h in hits) == [1, 2]
    assert await _search(database, agent, "stray") == []
    assert [h.seq for h in await _search(database, agent, "second")] == [2]


async def test_a_nul_character_in_a_message_never_breaks_the_append(database):
    agent = await _agent(database)
    sid = await _session(database, agent)
    await _append(
        database,
        sid,
        [
            _message("agent.message", "before\x00after octopus", 1),
            _message("agent.message", "a clean octopus", 2),
        ],
    )
    async with database.sessionmaker() as s:
        events, _ = await events_store.list_events(s, sid)
    assert [e.seq for e in events] == [1, 2]
    assert 2 in {h.seq for h in await _search(database, agent, "octopus")}


async def test_search_sees_only_the_agents_sessions_in_its_workspace(database):
    mine = await _agent(database, "ws1")
    sibling = await _agent(database, "ws1")
    foreign = await _agent(database, "ws2")
    for agent, ws, n in ((mine, "ws1", 1), (sibling, "ws1", 2), (foreign, "ws2", 3)):
        sid = await _session(database, agent, ws)
        await _append(database, sid, [_message("agent.message", f"secret pelican {n}", n)])
    assert [h.type for h in await _search(database, mine, "pelican")] == ["agent.message"]
    assert len(await _search(database, mine, "pelican")) == 1
    # The right agent id asked for through the wrong workspace finds nothing.
    assert await _search(database, foreign, "pelican", workspace_id="ws1") == []
    assert len(await _search(database, foreign, "pelican", workspace_id="ws2")) == 1


async def test_limit_and_window_bound_the_answer(database):
    agent = await _agent(database)
    sid = await _session(database, agent)
    await _append(
        database, sid, [_message("agent.message", f"llama number {n}", n) for n in range(1, 31)]
    )
    assert len(await _search(database, agent, "llama", limit=5)) == 5
    # Ranked among the 10 most recent matches only (equal scores: newest first).
    hits = await _search(database, agent, "llama", limit=50, window=10)
    assert [h.seq for h in hits] == list(range(30, 20, -1))


async def test_deleting_a_session_removes_its_events_from_the_index(database):
    agent = await _agent(database)
    gone = await _session(database, agent)
    kept = await _session(database, agent)
    await _append(database, gone, [_message("agent.message", "ephemeral heron", 1)])
    await _append(database, kept, [_message("agent.message", "lasting heron", 1)])
    async with database.sessionmaker.begin() as s:
        await s.execute(delete(AgentSession).where(AgentSession.id == gone))
    assert [h.session_id for h in await _search(database, agent, "heron")] == [kept]


async def test_reinstalling_backfills_events_mirrored_before(database):
    agent = await _agent(database)
    sid = await _session(database, agent)
    async with database.engine.begin() as conn:
        await conn.run_sync(search.uninstall)
    await _append(
        database,
        sid,
        [
            _message("agent.message", "an older flamingo", 1),
            _message("agent.message", "a NUL\x00 flamingo", 2),
        ],
    )
    async with database.engine.begin() as conn:
        await conn.run_sync(search.install)
    assert 1 in [h.seq for h in await _search(database, agent, "flamingo")]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Hello world", SearchTerms(("hello", "world"), ())),
        ('"exact phrase" word', SearchTerms(("word",), (("exact", "phrase"),))),
        ('"single"', SearchTerms(("single",), ())),
        ("AND OR NOT * ( ) : ^", SearchTerms(("and", "or", "not"), ())),
        ('unclosed "quote here', SearchTerms(("unclosed",), (("quote", "here"),))),
        ("dup dup", SearchTerms(("dup",), ())),
    ],
)
def test_queries_are_parsed_into_words_and_phrases(query, expected):
    assert parse_query(query) == expected


@pytest.mark.parametrize("query", ["", "   ", "*** ::: ()", '""'])
def test_a_query_without_words_is_refused(query):
    with pytest.raises(ValueError):
        parse_query(query)


async def test_operator_words_are_searched_as_plain_words(database):
    agent = await _agent(database)
    sid = await _session(database, agent)
    await _append(database, sid, [_message("user.message", "NEAR the shore OR the sea", 1)])
    hits = await _search(database, agent, "NEAR* shore (")
    assert [h.seq for h in hits] == [1]
