"""When something fails, the thread says so (the runtime) or the reply still arrives (Slack)."""

from __future__ import annotations

from tests.bot.conftest import SlackHarness, dm, mention


async def test_a_runtime_failure_is_explained_in_the_thread(harness: SlackHarness) -> None:
    await harness.bind_agent()
    harness.anthropic.fail_next("/events", 429, times=3, method="POST")
    event = dm("are you there?")
    await harness.send(event)
    text = await harness.reply("D1", event["ts"])
    assert "The agent runtime is unavailable right now" in text
    assert "429" in text


async def test_a_session_error_is_explained_in_the_thread(harness: SlackHarness) -> None:
    await harness.bind_agent()
    event = dm("please [fail:overloaded]")
    await harness.send(event)
    text = await harness.reply("D1", event["ts"])
    assert "The agent hit an error" in text
    assert "overloaded" in text


async def test_slack_429_on_posting_is_retried(harness: SlackHarness) -> None:
    await harness.bind_agent(channels=("C1",), default=False)
    harness.slack.fail("chat.startStream", status=429, retry_after=0)
    harness.slack.fail("chat.postMessage", status=429, retry_after=0)
    answered = mention("retry me")
    unbound = dm("hello?")  # no default agent: a notice, posted with chat.postMessage
    await harness.send(answered)
    await harness.send(unbound)
    assert await harness.reply("C1", answered["ts"]) == "You said: retry me"
    assert "No agent is set" in await harness.reply("D1", unbound["ts"])
    assert len(harness.slack.calls_of("chat.startStream")) == 2
    assert len(harness.slack.calls_of("chat.postMessage")) == 2


async def test_a_failing_status_call_never_holds_the_reply_back(harness: SlackHarness) -> None:
    await harness.bind_agent()
    harness.slack.fail("assistant.threads.setStatus", status=500, times=5)
    event = dm("status is broken")
    await harness.send(event)
    assert await harness.reply("D1", event["ts"]) == "You said: status is broken"


async def test_when_streaming_breaks_the_rest_of_the_answer_is_posted(
    harness: SlackHarness,
) -> None:
    await harness.bind_agent()
    harness.slack.fail("chat.appendStream", status=200, error="fatal_error", times=50)
    event = dm("[long:3000] [slow:0.02]")
    await harness.send(event)
    await harness.settle()
    text = harness.slack.thread_text("D1", event["ts"])
    assert len(text) == 3000
    assert text.startswith("The quick brown fox")
