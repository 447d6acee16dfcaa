"""Conversations in Slack, end to end: signed events in, replies in the fake Slack's threads."""

from __future__ import annotations

import asyncio

from tests.bot.conftest import ACTOR, SlackHarness, channel_message, dm, mention, new_ts


def user_messages(records) -> list:
    return [r for r in records if r.type == "user.message"]


async def test_a_dm_gets_a_streamed_reply_in_its_thread(harness: SlackHarness) -> None:
    await harness.bind_agent()
    event = dm("hello there")
    status, _ = await harness.send(event)
    assert status == 200
    assert await harness.reply("D1", event["ts"]) == "You said: hello there"
    assert harness.slack.calls_of("chat.startStream")
    assert not harness.slack.root_messages("D1")
    assert any(s["status"] == "is thinking…" for s in harness.slack.statuses)


async def test_a_mention_and_three_thread_replies_are_one_session_of_four_turns(
    harness: SlackHarness,
) -> None:
    agent = await harness.bind_agent(channels=("C1",), default=False)
    root = mention("first")
    await harness.send(root)
    # The ack is durable: when Slack has its 200, the session and the message are stored.
    assert len(await harness.sessions(agent)) == 1
    for n in range(3):
        reply = channel_message(f"reply {n}", thread_ts=root["ts"])
        status, _ = await harness.send(reply)
        assert status == 200
    await harness.settle()
    sessions = await harness.sessions(agent)
    assert len(sessions) == 1
    assert sessions[0].slack.thread_ts == root["ts"]
    records = await harness.events(agent, sessions[0].id)
    assert len(user_messages(records)) == 4
    text = harness.slack.thread_text("C1", root["ts"], sep="\n")
    for said in ("first", "reply 0", "reply 1", "reply 2"):
        assert f"You said: {said}" in text
    assert not harness.slack.root_messages("C1")


async def test_twenty_concurrent_first_messages_in_a_new_thread_make_one_session(
    harness: SlackHarness,
) -> None:
    agent = await harness.bind_agent(channels=("C1",), default=False)
    thread_ts = new_ts()
    events = [mention(f"message {n}", thread_ts=thread_ts) for n in range(20)]
    results = await asyncio.gather(*(harness.send(e) for e in events))
    assert [status for status, _ in results] == [200] * 20
    await harness.settle(timeout=60)
    sessions = await harness.sessions(agent)
    assert len(sessions) == 1
    records = await harness.events(agent, sessions[0].id)
    assert len(user_messages(records)) == 20


async def test_a_slack_retry_is_acknowledged_and_not_answered_twice(
    harness: SlackHarness,
) -> None:
    agent = await harness.bind_agent()
    event = dm("only once")
    assert (await harness.send(event, event_id="EvRETRY1"))[0] == 200
    assert (await harness.send(event, event_id="EvRETRY1", retry_num=1))[0] == 200
    await harness.reply("D1", event["ts"])
    assert (await harness.send(event, event_id="EvRETRY1", retry_num=2))[0] == 200
    await harness.settle()
    assert len(harness.slack.thread("D1", event["ts"])) == 1
    sessions = await harness.sessions(agent)
    assert len(user_messages(await harness.events(agent, sessions[0].id))) == 1


async def test_a_mention_delivered_as_app_mention_and_message_is_answered_once(
    harness: SlackHarness,
) -> None:
    agent = await harness.bind_agent(channels=("C1",), default=False)
    as_mention = mention("twice delivered")
    as_message = channel_message(as_mention["text"], ts=as_mention["ts"])
    results = await asyncio.gather(harness.send(as_mention), harness.send(as_message))
    assert [status for status, _ in results] == [200, 200]
    assert await harness.reply("C1", as_mention["ts"]) == "You said: twice delivered"
    await harness.settle()
    assert len(harness.slack.thread("C1", as_mention["ts"])) == 1
    sessions = await harness.sessions(agent)
    assert len(sessions) == 1
    assert len(user_messages(await harness.events(agent, sessions[0].id))) == 1


async def test_the_bot_ignores_itself_other_bots_edits_deletions_and_joins(
    harness: SlackHarness,
) -> None:
    agent = await harness.bind_agent(channels=("C1",))
    ignored = [
        dm("from myself", user="UBOT"),
        dm("from another bot", user="UOTHERBOT", bot_id="B999"),
        dm("bot message", subtype="bot_message", bot_id="B999"),
        dm(
            "",
            subtype="message_changed",
            message={"type": "message", "user": "U1", "text": "edited <@UBOT>", "ts": new_ts()},
        ),
        dm("", subtype="message_deleted", deleted_ts=new_ts()),
        channel_message("<@U1> has joined the channel", subtype="channel_join"),
        mention("from a bot", bot_id="B999"),
    ]
    for event in ignored:
        assert (await harness.send(event))[0] == 200
    await harness.settle()
    assert await harness.sessions(agent) == []
    assert harness.slack.messages == []
    assert not harness.slack.calls_of("chat.startStream")


async def test_a_mention_in_a_channel_with_no_agent_gets_a_helpful_reply(
    harness: SlackHarness,
) -> None:
    await harness.bind_agent(channels=("C1",), default=False)
    event = mention("anyone there?", channel="C9")
    as_message = channel_message(event["text"], channel="C9", ts=event["ts"])
    assert (await harness.send(event))[0] == 200
    assert (await harness.send(as_message))[0] == 200
    text = await harness.reply("C9", event["ts"])
    assert text.startswith("No agent is bound to this channel yet")
    await harness.settle()
    assert len(harness.slack.thread("C9", event["ts"])) == 1
    assert not harness.slack.root_messages("C9")


async def test_a_dm_with_no_default_agent_says_so(harness: SlackHarness) -> None:
    event = dm("hi")
    await harness.send(event)
    assert "No agent is set as this workspace's default" in await harness.reply("D1", event["ts"])


async def test_a_message_in_an_archived_sessions_thread_gets_an_archived_reply(
    harness: SlackHarness,
) -> None:
    agent = await harness.bind_agent()
    first = dm("before archiving")
    await harness.send(first)
    await harness.reply("D1", first["ts"])
    await harness.settle()
    (session,) = await harness.sessions(agent)
    await harness.app.services.core.archive(ACTOR, agent.id, session.id)
    later = dm("after archiving", thread_ts=first["ts"])
    assert (await harness.send(later))[0] == 200
    await harness.settle()
    texts = [m.text for m in harness.slack.thread("D1", first["ts"])]
    assert texts[0] == "You said: before archiving"
    assert "archived" in texts[1]
    assert len(texts) == 2
    assert len(harness.anthropic.sent_events(event_type="user.message")) == 1


async def test_a_thread_reply_in_a_thread_with_no_session_is_ignored(
    harness: SlackHarness,
) -> None:
    agent = await harness.bind_agent(channels=("C1",))
    event = channel_message("just chatting", thread_ts=new_ts())
    assert (await harness.send(event))[0] == 200
    top_level = channel_message("no mention at the top")
    assert (await harness.send(top_level))[0] == 200
    await harness.settle()
    assert await harness.sessions(agent) == []
    assert harness.slack.messages == []


async def test_a_thread_reply_without_mention_continues_the_threads_session(
    harness: SlackHarness,
) -> None:
    agent = await harness.bind_agent(channels=("C1",))
    root = mention("start")
    await harness.send(root)
    await harness.settle()
    await harness.send(channel_message("go on", thread_ts=root["ts"]))
    await harness.settle()
    assert "You said: go on" in harness.slack.thread_text("C1", root["ts"])
    assert len(await harness.sessions(agent)) == 1


async def test_a_long_answer_is_split_across_messages_and_never_cut(
    harness: SlackHarness,
) -> None:
    agent = await harness.bind_agent()
    event = dm("[long:30000]")
    await harness.send(event)
    await harness.settle(timeout=30)
    text = harness.slack.thread_text("D1", event["ts"])
    messages = harness.slack.thread("D1", event["ts"])
    assert len(messages) >= 3
    assert all(len(m.text) <= 12_000 for m in messages)
    (session,) = await harness.sessions(agent)
    history = harness.anthropic.history(session.anthropic_session_id)
    (final,) = [e["content"][0]["text"] for e in history if e["type"] == "agent.message"]
    assert len(final) == 30000
    assert text == final


async def test_a_message_sent_while_a_turn_runs_is_marked_queued(harness: SlackHarness) -> None:
    await harness.bind_agent()
    first = dm("slow one [slow:0.3]")
    await harness.send(first)
    await harness.slack.wait_for(lambda: harness.slack.calls_of("chat.startStream"))
    second = dm("waiting one", thread_ts=first["ts"])
    await harness.send(second)
    await harness.slack.wait_for(lambda: harness.slack.calls_of("reactions.add"))
    assert harness.slack.calls_of("reactions.add")[0].args["timestamp"] == second["ts"]
    await harness.settle()
    assert "You said: waiting one" in harness.slack.thread_text("D1", first["ts"])
    assert harness.slack.reactions[("D1", second["ts"])] == []


async def test_an_empty_wallet_is_said_in_the_thread_and_nothing_runs(
    harness: SlackHarness, database
) -> None:
    from decimal import Decimal

    from store import wallets as wallets_store

    await harness.bind_agent()
    async with database.sessionmaker.begin() as s:
        await wallets_store.debit(
            s, ACTOR.workspace_id, "ai", Decimal(100), reason="test", ref=None
        )
    event = dm("are you there?")
    assert (await harness.send(event))[0] == 200
    assert "wallet is empty" in await harness.reply("D1", event["ts"])
    await harness.settle()
    assert harness.anthropic.sent_events(event_type="user.message") == []
