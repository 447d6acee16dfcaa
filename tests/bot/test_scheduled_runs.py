"""A schedule bound to a Slack channel: its answer opens a thread there, which continues it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from store.models import Schedule, utcnow
from tests.bot.conftest import ACTOR, SlackHarness, channel_message


async def test_a_scheduled_answer_opens_a_channel_thread_that_continues_the_session(
    harness: SlackHarness, database
) -> None:
    agent = await harness.bind_agent(channels=("C7",), default=False)
    triggers = harness.app.services.triggers
    schedule = await triggers.create_schedule(
        ACTOR,
        agent.id,
        cron="0 9 * * 1-5",
        timezone="UTC",
        input_text="morning digest",
        slack_team_id="T1",
        slack_channel_id="C7",
    )
    async with database.sessionmaker.begin() as s:
        await s.execute(
            update(Schedule)
            .where(Schedule.id == schedule.id)
            .values(next_fire_at=utcnow() - timedelta(seconds=1))
        )
    assert await triggers.fire_due() == 1
    await harness.settle()

    roots = harness.slack.root_messages("C7")
    assert len(roots) == 1, "one new message in the channel"
    thread_ts = roots[0].ts
    assert "You said: morning digest" in harness.slack.thread_text("C7", thread_ts)
    [session] = await harness.sessions(agent)
    assert session.source == "schedule"
    assert session.slack is not None and session.slack.thread_ts == thread_ts

    status, _ = await harness.send(
        channel_message("and tomorrow?", thread_ts=thread_ts, channel="C7")
    )
    assert status == 200
    await harness.settle()
    assert len(await harness.sessions(agent)) == 1, "the reply continued the scheduled session"
    assert "You said: and tomorrow?" in harness.slack.thread_text("C7", thread_ts)
