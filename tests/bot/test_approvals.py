"""A tool that needs a human: the card in the thread, the click decides, the card shows who."""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace

from tests.bot.conftest import SlackHarness, dm, mention
from tests.fakes.slack_api import Message


def card_in(harness: SlackHarness, channel: str, thread_ts: str) -> Message | None:
    return next(
        (
            m
            for m in harness.slack.thread(channel, thread_ts)
            if m.blocks and any(b["type"] == "actions" for b in m.blocks)
        ),
        None,
    )


async def test_an_approval_card_is_decided_by_a_channel_members_click(
    harness: SlackHarness,
) -> None:
    await harness.bind_agent(channels=("C1",), approval_required_tools=("bash",))
    harness.slack.members["C1"] = ["U1", "UBOT"]
    root = mention("list files [tool:bash]")
    await harness.send(root)
    card = await harness.slack.wait_for(lambda: card_in(harness, "C1", root["ts"]))
    assert "bash" in card.text
    stale = replace(card, blocks=deepcopy(card.blocks))  # what a second viewer still sees

    assert await harness.click("U_OUTSIDER", "tool_approve", card) == 200
    await harness.slack.wait_for(lambda: harness.slack.ephemerals)
    assert harness.slack.ephemerals[0]["user"] == "U_OUTSIDER"
    assert card_in(harness, "C1", root["ts"]) is card  # still waiting

    assert await harness.click("U1", "tool_approve", card) == 200
    await harness.slack.wait_for(lambda: card.updated)
    assert "approved by <@U1>" in card.text
    assert not any(b["type"] == "actions" for b in card.blocks)
    await harness.settle()
    assert "I ran bash." in harness.slack.thread_text("C1", root["ts"], sep="\n")
    (confirmation,) = harness.anthropic.sent_events(event_type="user.tool_confirmation")
    assert confirmation["result"] == "allow"

    assert await harness.click("U1", "tool_deny", stale) == 200
    await harness.slack.wait_for(lambda: card.updated >= 2)
    assert "already decided" in card.text
    assert len(harness.anthropic.sent_events(event_type="user.tool_confirmation")) == 1


async def test_deny_in_a_dm_tells_the_agent_no(harness: SlackHarness) -> None:
    await harness.bind_agent(approval_required_tools=("bash",))
    event = dm("delete everything [tool:bash]")
    await harness.send(event)
    card = await harness.slack.wait_for(lambda: card_in(harness, "D1", event["ts"]))
    assert await harness.click("U1", "tool_deny", card) == 200
    await harness.settle()
    assert "denied by <@U1>" in card.text
    assert "The bash call was denied" in harness.slack.thread_text("D1", event["ts"], sep="\n")
