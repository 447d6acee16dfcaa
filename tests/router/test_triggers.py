"""Schedules and webhooks in the core, on both databases."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from router.errors import InvalidInput, NotFound
from router.triggers import BadSignature, MalformedBody, next_fire, sign
from store.models import AgentSession, AgentTriggerRun, Schedule, utcnow
from tests.conftest import start_app
from tests.router.conftest import ACTOR, API_KEY, all_events, deploy, settled
from tests.waiting import eventually


async def _count(database, model, *where) -> int:
    async with database.sessionmaker() as s:
        return await s.scalar(select(func.count()).select_from(model).where(*where))


async def _make_due(database, schedule_id: str, minutes_ago: int) -> None:
    async with database.sessionmaker.begin() as s:
        await s.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id)
            .values(next_fire_at=utcnow() - timedelta(minutes=minutes_ago))
        )


async def test_two_processes_racing_on_a_schedule_fire_it_once(database, running, fake_runtime):
    other = await start_app(
        database, anthropic_api_key=API_KEY, anthropic_base_url=fake_runtime.base_url
    )
    try:
        agent_id = await deploy(running.services.core)
        schedule = await running.services.triggers.create_schedule(
            ACTOR, agent_id, cron="*/5 * * * *", timezone="Europe/Paris", input_text="daily report"
        )
        assert schedule.next_fire_at > utcnow()
        await _make_due(database, schedule.id, minutes_ago=1)
        fired = await asyncio.gather(
            *[app.services.triggers.fire_due() for app in (running, other) for _ in range(3)]
        )
        assert sum(fired) == 1
        assert await _count(database, AgentTriggerRun) == 1
        sessions = await running.services.core.list_sessions(
            ACTOR, agent_id, limit=10, cursor=None, source="schedule"
        )
        assert len(sessions.items) == 1
        session = sessions.items[0]
        await settled(running, agent_id, session.id)
        await settled(other, agent_id, session.id)
        events = await all_events(running.services.core, agent_id, session.id)
        assert [e.data["content"][0]["text"] for e in events if e.type == "user.message"] == [
            "daily report"
        ]
        runs = await running.services.triggers.list_runs(ACTOR, agent_id, limit=10, cursor=None)

        async def run_ok() -> bool:
            page = await running.services.triggers.list_runs(ACTOR, agent_id, limit=10, cursor=None)
            return page.items[0].status == "ok"

        await eventually(run_ok)
        assert runs.items[0].session_id == session.id and runs.items[0].kind == "schedule"
    finally:
        await other.stop()


async def test_missed_fires_run_once_and_the_schedule_moves_past_now(database, running):
    agent_id = await deploy(running.services.core)
    triggers = running.services.triggers
    schedule = await triggers.create_schedule(
        ACTOR, agent_id, cron="* * * * *", timezone="UTC", input_text="tick"
    )
    await _make_due(database, schedule.id, minutes_ago=180)  # 180 missed minutes
    assert await triggers.fire_due() == 1
    assert await triggers.fire_due() == 0
    [after] = await triggers.list_schedules(ACTOR, agent_id)
    assert after.next_fire_at > utcnow()
    assert await _count(database, AgentSession, AgentSession.source == "schedule") == 1


async def test_schedule_input_is_validated(running):
    agent_id = await deploy(running.services.core)
    with pytest.raises(InvalidInput, match="timezone"):
        await running.services.triggers.create_schedule(
            ACTOR, agent_id, cron="0 9 * * *", timezone="Mars/Olympus", input_text="x"
        )
    with pytest.raises(InvalidInput, match="cron"):
        await running.services.triggers.create_schedule(
            ACTOR, agent_id, cron="every morning", timezone="UTC", input_text="x"
        )


def test_next_fire_follows_the_zone_across_daylight_saving():
    from datetime import UTC, datetime

    before_change = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)  # Paris switches on the 29th
    first = next_fire("0 9 * * *", "Europe/Paris", before_change)
    second = next_fire("0 9 * * *", "Europe/Paris", first)
    assert (first.hour, second.hour) == (8, 7)  # 09:00 CET, then 09:00 CEST


async def test_a_replayed_webhook_creates_one_session(database, running):
    triggers = running.services.triggers
    agent_id = await deploy(running.services.core)
    hook = await triggers.create_webhook(ACTOR, agent_id)
    body = json.dumps({"order": 42, "status": "paid"}).encode()
    signature = sign(hook.secret, body)

    first = await triggers.deliver(hook.id, body, signature=signature, idempotency_key="k1")
    replays = await asyncio.gather(
        *[
            triggers.deliver(hook.id, body, signature=signature, idempotency_key="k1")
            for _ in range(5)
        ]
    )
    assert not first.replay and all(r.replay for r in replays)
    assert {(r.session_id, r.trigger_run_id) for r in replays} == {
        (first.session_id, first.trigger_run_id)
    }
    # no key: the same body within the window is the same delivery; another body is not
    again = await triggers.deliver(hook.id, body, signature=signature, idempotency_key=None)
    same = await triggers.deliver(hook.id, body, signature=signature, idempotency_key=None)
    other_body = json.dumps({"order": 43}).encode()
    other = await triggers.deliver(
        hook.id, other_body, signature=sign(hook.secret, other_body), idempotency_key=None
    )
    assert same.replay and same.session_id == again.session_id
    assert not other.replay
    assert await _count(database, AgentSession, AgentSession.source == "webhook") == 3

    await settled(running, agent_id, first.session_id)
    events = await all_events(running.services.core, agent_id, first.session_id)
    first_message = next(e for e in events if e.type == "user.message")
    assert json.loads(first_message.data["content"][0]["text"]) == {"order": 42, "status": "paid"}


async def test_refused_webhook_deliveries_create_nothing(database, running):
    triggers = running.services.triggers
    agent_id = await deploy(running.services.core)
    hook = await triggers.create_webhook(ACTOR, agent_id)
    body = b'{"a": 1}'
    with pytest.raises(BadSignature):
        await triggers.deliver(hook.id, body, signature="sha256=00", idempotency_key=None)
    with pytest.raises(BadSignature):
        await triggers.deliver(hook.id, body, signature=None, idempotency_key=None)
    with pytest.raises(NotFound):
        await triggers.deliver("whk_nope", body, signature=sign("x", body), idempotency_key=None)
    not_json = b"order=42"
    with pytest.raises(MalformedBody):
        await triggers.deliver(
            hook.id, not_json, signature=sign(hook.secret, not_json), idempotency_key=None
        )
    assert await _count(database, AgentSession) == 0
    assert await _count(database, AgentTriggerRun) == 0


async def test_a_schedule_past_its_last_occurrence_fires_once_and_does_not_stop_others(
    database, running
):
    agent_id = await deploy(running.services.core)
    triggers = running.services.triggers
    ending = await triggers.create_schedule(
        ACTOR, agent_id, cron="0 0 1 1 * 0 2030", timezone="UTC", input_text="last one"
    )
    other = await triggers.create_schedule(
        ACTOR, agent_id, cron="* * * * *", timezone="UTC", input_text="every minute"
    )
    await _make_due(database, ending.id, minutes_ago=2)
    await _make_due(database, other.id, minutes_ago=1)
    # its next occurrence after now exists (2030); move the clock past it
    from datetime import UTC, datetime

    triggers.clock = lambda: datetime(2031, 1, 1, tzinfo=UTC)
    try:
        assert await triggers.fire_due() == 2
    finally:
        triggers.clock = utcnow
    schedules = {s.id: s for s in await triggers.list_schedules(ACTOR, agent_id)}
    assert schedules[ending.id].next_fire_at is None
    assert await triggers.fire_due() == 0
