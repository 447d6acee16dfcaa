"""Conversations in Slack, end to end: signed events in, replies in the fake Slack's threads."""

from __future__ import annotations

from tests.bot.conftest import SlackHarness, dm


async def test_a_dm_gets_a_streamed_reply_in_its_thread(harness: SlackHarness) -> None:
    await harness.bind_agent()
    event = dm("hello there")
    status, _ = await harness.send(event)
    assert status == 200
    text = await harness.reply("D1", event["ts"])
    assert text == "You said: hello there"
    assert harness.slack.calls_of("chat.startStream")
    assert not harness.slack.root_messages("D1")
    assert any(s["status"] == "is thinking…" for s in harness.slack.statuses)
