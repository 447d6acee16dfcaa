"""The session lifecycle and the turn runner, against the fake managed-agents API over HTTP,
on both databases."""

from __future__ import annotations

import asyncio

import pytest

from router.errors import SessionArchived
from tests.conftest import TestDatabase, start_app
from tests.fakes.anthropic_api import FakeAnthropic
from tests.router.conftest import ACTOR, API_KEY
from tests.router.conftest import all_events as _all_events
from tests.router.conftest import deploy as _agent
from tests.router.conftest import settled as _settled
from tests.waiting import eventually


def _types(events: list) -> list[str]:
    return [e.type for e in events]


def _user_texts(events: list) -> list[str]:
    return [
        "".join(b.get("text", "") for b in e.data.get("content", []))
        for e in events
        if e.type == "user.message"
    ]


async def test_one_message_gives_one_turn_and_a_mirrored_transcript(running, fake_runtime):
    core = running.services.core
    agent_id = await _agent(core)
    session, receipt = await core.create_session(ACTOR, agent_id, text="hello there")
    assert receipt is not None and receipt.session_id == session.id
    await _settled(running, agent_id, session.id)

    events = await _all_events(core, agent_id, session.id)
    kinds = _types(events)
    # in the runtime's order: the message, the answer, then idle
    assert (
        kinds.index("user.message")
        < kinds.index("agent.message")
        < kinds.index("session.status_idle")
    )
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.id for e in events}) == len(events)
    answer = next(e for e in events if e.type == "agent.message")
    assert "hello there" in "".join(b.get("text", "") for b in answer.data["content"])
    view = await core.get_session(ACTOR, agent_id, session.id)
    assert view.anthropic_session_id and view.status == "idle"
    assert len(fake_runtime.sent_events(event_type="user.message")) == 1


async def test_messages_sent_while_running_queue_and_run_in_order(running, fake_runtime):
    core = running.services.core
    agent_id = await _agent(core)
    session, _ = await core.create_session(ACTOR, agent_id, text="first [slow:0.2]")

    async def running_now() -> bool:
        return (await core.get_session(ACTOR, agent_id, session.id)).status == "running"

    await eventually(running_now)
    receipts = [
        await core.post_message(ACTOR, agent_id, session.id, text=t)
        for t in ("second", "third", "fourth")
    ]
    assert [r.queued for r in receipts] == [1, 2, 3]
    assert all(r.status == "running" for r in receipts)
    await _settled(running, agent_id, session.id)

    events = await _all_events(core, agent_id, session.id)
    assert _user_texts(events) == ["first [slow:0.2]", "second", "third", "fourth"]
    assert _types(events).count("session.status_idle") == 4
    # one turn each: every user message is followed by its own idle before the next one
    order = [e.type for e in events if e.type in ("user.message", "session.status_idle")]
    assert order == ["user.message", "session.status_idle"] * 4
    assert len(fake_runtime.sent_events(event_type="user.message")) == 4


async def test_interrupt_stops_the_turn_and_keeps_the_queue(running, fake_runtime):
    core = running.services.core
    agent_id = await _agent(core)
    session, _ = await core.create_session(
        ACTOR, agent_id, text="tell a long story [slow:0.3] [long:2000]"
    )

    async def streaming() -> bool:
        events = await _all_events(core, agent_id, session.id)
        return "user.message" in _types(events)

    await eventually(streaming)
    await core.post_message(ACTOR, agent_id, session.id, text="after the interrupt")
    view = await core.interrupt(ACTOR, agent_id, session.id)
    assert view.queued == 1
    await _settled(running, agent_id, session.id)

    events = await _all_events(core, agent_id, session.id)
    assert len(fake_runtime.sent_events(event_type="user.interrupt")) == 1
    # the interrupted turn ended without its full story; the queued message then ran
    assert _user_texts(events) == [
        "tell a long story [slow:0.3] [long:2000]",
        "after the interrupt",
    ]
    first_idle = _types(events).index("session.status_idle")
    second_user = [i for i, e in enumerate(events) if e.type == "user.message"][1]
    assert first_idle < second_user


async def test_archived_session_refuses_messages_and_sends_nothing(running, fake_runtime):
    core = running.services.core
    agent_id = await _agent(core)
    session, _ = await core.create_session(ACTOR, agent_id, text="hi")
    await _settled(running, agent_id, session.id)
    archived = await core.archive(ACTOR, agent_id, session.id)
    assert archived.status == "archived" and archived.archived_at is not None
    sends_before = len(fake_runtime.sent_events(event_type="user.message"))
    with pytest.raises(SessionArchived):
        await core.post_message(ACTOR, agent_id, session.id, text="anyone?")
    again = await core.archive(ACTOR, agent_id, session.id)
    assert again.status == "archived" and again.archived_at == archived.archived_at
    events = await _all_events(core, agent_id, session.id)
    assert [e.type for e in events].count("app.session_archived") == 1, "said once, live"
    assert len(fake_runtime.sent_events(event_type="user.message")) == sends_before


async def test_stream_cut_mid_turn_resumes_without_duplicates(running, fake_runtime):
    core = running.services.core
    agent_id = await _agent(core)
    session, _ = await core.create_session(ACTOR, agent_id, text="go on [slow:0.05] [cut]")
    await _settled(running, agent_id, session.id)

    events = await _all_events(core, agent_id, session.id)
    runtime_ids = [e.id for e in events]
    assert len(runtime_ids) == len(set(runtime_ids))
    assert _types(events).count("agent.message") == 1
    assert _types(events)[-1] == "session.status_idle"
    view = await core.get_session(ACTOR, agent_id, session.id)
    history = fake_runtime.history(view.anthropic_session_id)
    assert [e["id"] for e in history] == runtime_ids, "the mirror is the runtime's history"
    assert len(fake_runtime.requests_to("GET", "/events/stream")) >= 2, "the stream was reopened"


async def test_a_crash_mid_turn_loses_no_message_and_sends_none_twice(
    database: TestDatabase, fake_runtime: FakeAnthropic
):
    first = await start_app(
        database,
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake_runtime.base_url,
        lease_seconds=1.0,
        recover_every=0.2,
    )
    core = first.services.core
    agent_id = await _agent(core)
    session, _ = await core.create_session(ACTOR, agent_id, text="slow one [slow:0.2]")
    await core.post_message(ACTOR, agent_id, session.id, text="queued behind")

    async def mid_turn() -> bool:
        return len(fake_runtime.sent_events(event_type="user.message")) == 1

    await eventually(mid_turn)
    # kill: cancel the runner's work without letting it release anything, drop the process
    for task in list(first.services.runner._tasks.values()):
        task.cancel()
    await asyncio.sleep(0)
    await first.runner.cleanup()
    await first.services.engine.dispose()

    second = await start_app(
        database,
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake_runtime.base_url,
        lease_seconds=1.0,
        recover_every=0.2,
    )
    try:
        await _settled(second, agent_id, session.id)
        events = await _all_events(second.services.core, agent_id, session.id)
    finally:
        await second.stop()
    assert _user_texts(events) == ["slow one [slow:0.2]", "queued behind"]
    assert len(fake_runtime.sent_events(event_type="user.message")) == 2, "nothing sent twice"
    assert len({e.id for e in events}) == len(events)


async def test_no_api_key_is_a_clear_error_event(database: TestDatabase):
    app = await start_app(database)
    try:
        core = app.services.core
        agent_id = await _agent(core)
        session, _ = await core.create_session(ACTOR, agent_id, text="hello?")
        await _settled(app, agent_id, session.id)
        events = await _all_events(core, agent_id, session.id)
    finally:
        await app.stop()
    errors = [e for e in events if e.type == "app.error"]
    assert len(errors) == 1
    assert errors[0].data["code"] == "runtime_not_configured"
    assert "ANTHROPIC_API_KEY" in errors[0].data["message"]


@pytest.mark.parametrize(
    "status, code", [(500, "runtime_unavailable"), (529, "runtime_overloaded")]
)
async def test_runtime_failures_after_retries_become_an_error_event(
    running, fake_runtime, status, code
):
    core = running.services.core
    agent_id = await _agent(core)
    fake_runtime.fail_next("/events", status, times=50)
    session, _ = await core.create_session(ACTOR, agent_id, text="will it fail?")
    await _settled(running, agent_id, session.id)
    events = await _all_events(core, agent_id, session.id)
    errors = [e for e in events if e.type == "app.error"]
    assert [e.data["code"] for e in errors] == [code]


async def test_turn_over_the_time_limit_is_stopped_and_reported(database, fake_runtime):
    app = await start_app(
        database,
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake_runtime.base_url,
        turn_timeout_seconds=0.5,
    )
    try:
        core = app.services.core
        agent_id = await _agent(core)
        session, _ = await core.create_session(ACTOR, agent_id, text="too slow [slow:1]")
        await _settled(app, agent_id, session.id)
        events = await _all_events(core, agent_id, session.id)
    finally:
        await app.stop()
    errors = [e for e in events if e.type == "app.error"]
    assert [e.data["code"] for e in errors] == ["turn_timeout"]
    assert len(fake_runtime.sent_events(event_type="user.interrupt")) == 1
