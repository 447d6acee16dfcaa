"""ManagedAgentsRuntime against the fake managed-agents API, over loopback HTTP with the real SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import pytest

from router.errors import RuntimeFailure
from router.ports import AgentSpec, RuntimeAgentRef, RuntimeEvent, TextDelta
from runtime.client import ManagedAgentsRuntime, build_runtime
from runtime.scripted import ScriptedRuntime
from tests.fakes.anthropic_api import FakeAnthropic

SPEC = AgentSpec(
    name="helper",
    model="claude-sonnet-4-5",
    system="You help.",
    approval_required_tools=("bash", "web_fetch"),
    custom_tools=(
        {
            "name": "escalate_to_human",
            "description": "Ask a human for help.",
            "input_schema": {"type": "object", "properties": {"reason": {"type": "string"}}},
        },
    ),
    metadata={"workspace_id": "ws_1"},
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as server:
        yield server


def make_runtime(
    fake: FakeAnthropic, *, api_key: str | None = None, timeout: float = 5, page_size: int = 100
) -> ManagedAgentsRuntime:
    client = anthropic.AsyncAnthropic(
        api_key=api_key or fake.api_key, base_url=fake.base_url, max_retries=2, timeout=timeout
    )
    return ManagedAgentsRuntime(client, page_size=page_size)


@pytest.fixture
async def runtime(fake: FakeAnthropic) -> AsyncIterator[ManagedAgentsRuntime]:
    rt = make_runtime(fake)
    yield rt
    await rt.close()


async def new_session(runtime: ManagedAgentsRuntime) -> tuple[RuntimeAgentRef, str]:
    ref = await runtime.deploy_agent(SPEC)
    return ref, await runtime.create_session(ref, title="A chat", metadata={"source": "test"})


def text(value: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": value}]


async def read_until_idle(
    items: AsyncIterator[RuntimeEvent | TextDelta],
) -> list[RuntimeEvent | TextDelta]:
    """Stream items up to and including the next `session.status_idle`."""
    seen: list[RuntimeEvent | TextDelta] = []
    async for item in items:
        seen.append(item)
        if isinstance(item, RuntimeEvent) and item.type == "session.status_idle":
            return seen
    raise AssertionError(f"stream ended before idle: {seen}")


def events_of(items: list[RuntimeEvent | TextDelta]) -> list[RuntimeEvent]:
    return [item for item in items if isinstance(item, RuntimeEvent)]


async def test_deploy_creates_agent_and_environment_with_always_ask_for_approval_tools(
    fake: FakeAnthropic, runtime: ManagedAgentsRuntime
) -> None:
    ref = await runtime.deploy_agent(SPEC)

    assert ref.agent_version == 1
    assert ref.environment_id in fake.world.environments
    [sent] = fake.requests_to("POST", "/v1/agents")
    toolset, custom = sent.json["tools"]
    policies = {c["name"]: c["permission_policy"]["type"] for c in toolset["configs"]}
    assert toolset["type"] == "agent_toolset_20260401"
    assert policies["bash"] == policies["web_fetch"] == "always_ask"
    assert policies["read"] == policies["write"] == "always_allow"
    assert custom == {"type": "custom", **SPEC.custom_tools[0]}
    assert sent.json["model"] == "claude-sonnet-4-5"
    assert sent.json["system"] == "You help."


async def test_redeploy_updates_the_agent_and_reuses_its_environment(
    fake: FakeAnthropic, runtime: ManagedAgentsRuntime
) -> None:
    first = await runtime.deploy_agent(SPEC)
    changed = AgentSpec(name="helper", model="claude-opus-4-5", system="Be brief.")

    second = await runtime.deploy_agent(changed, existing=first)

    assert (second.agent_id, second.environment_id) == (first.agent_id, first.environment_id)
    assert second.agent_version == 2
    assert len(fake.requests_to("POST", "/v1/environments")) == 1
    assert fake.world.get_agent(first.agent_id)["system"] == "Be brief."


async def test_create_session_pins_the_agent_version(
    fake: FakeAnthropic, runtime: ManagedAgentsRuntime
) -> None:
    ref, session_id = await new_session(runtime)

    [sent] = fake.requests_to("POST", "/v1/sessions")
    assert sent.json["agent"] == {"type": "agent", "id": ref.agent_id, "version": 1}
    assert sent.json["title"] == "A chat"
    assert sent.json["metadata"] == {"source": "test"}
    assert await runtime.session_status(session_id) == "idle"


async def test_a_turn_streams_deltas_then_the_final_message_and_idle(
    runtime: ManagedAgentsRuntime,
) -> None:
    _, session_id = await new_session(runtime)

    async with runtime.stream(session_id) as items:
        await runtime.send_user_message(session_id, text("hello there, agent"))
        seen = await read_until_idle(items)

    types = [e.type for e in events_of(seen)]
    assert types == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    deltas = [item for item in seen if isinstance(item, TextDelta)]
    message = next(e for e in events_of(seen) if e.type == "agent.message")
    assert len(deltas) > 1
    assert {d.event_id for d in deltas} == {message.id}
    assert "".join(d.text for d in deltas) == message.data["content"][0]["text"]
    assert message.data["content"][0]["text"] == "You said: hello there, agent"
    usage = events_of(seen)[-2].data["model_usage"]
    assert set(usage) >= {
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    }
    idle = events_of(seen)[-1]
    assert idle.data["stop_reason"] == {"type": "end_turn"}
    assert idle.processed_at is not None


async def test_list_events_after_a_cut_stream_returns_the_missed_events(
    fake: FakeAnthropic, runtime: ManagedAgentsRuntime
) -> None:
    _, session_id = await new_session(runtime)

    async with runtime.stream(session_id) as items:
        await runtime.send_user_message(session_id, text("[cut] tell me a story"))
        seen = [item async for item in items]  # ends quietly when the connection drops

    assert not any(isinstance(i, RuntimeEvent) and i.type == "agent.message" for i in seen)
    await fake.wait_idle(session_id)
    last = events_of(seen)[-1]
    missed = await runtime.list_events(session_id, after=last.processed_at)

    assert [e.type for e in missed] == [
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert not {e.id for e in missed} & {e.id for e in events_of(seen)}
    assert fake.requests_to("GET", "/events")[-1].query["created_at[gt]"]
    whole = await runtime.list_events(session_id)
    assert [e.id for e in whole] == [e.id for e in events_of(seen) + missed]


async def test_a_reopened_stream_carries_the_rest_of_the_turn_after_a_drop(
    fake: FakeAnthropic, runtime: ManagedAgentsRuntime
) -> None:
    _, session_id = await new_session(runtime)

    async with runtime.stream(session_id) as items:
        await runtime.send_user_message(session_id, text("[slow:0.05] a slower answer"))
        before = []
        async for item in items:
            before.append(item)
            if isinstance(item, TextDelta):
                fake.cut_streams()
        assert fake.open_streams == 0

    async with runtime.stream(session_id) as items:
        after = await read_until_idle(items)

    streamed = {e.id for e in events_of(before + after)}
    missed = [e for e in await runtime.list_events(session_id) if e.id not in streamed]
    assert [e.type for e in events_of(after)][-3:] == [
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert all(e.type != "agent.message" for e in missed)


async def test_list_events_reads_every_page_in_order(fake: FakeAnthropic) -> None:
    runtime = make_runtime(fake, page_size=4)
    _, session_id = await new_session(runtime)
    for number in range(3):
        await runtime.send_user_message(session_id, text(f"message {number}"))
        await fake.wait_idle(session_id)

    events = await runtime.list_events(session_id)

    assert [e.id for e in events] == [e["id"] for e in fake.history(session_id)]
    assert len(events) == 18
    assert len(fake.requests_to("GET", "/events")) == 5
    await runtime.close()


async def test_a_tool_needing_approval_waits_and_runs_when_allowed(
    runtime: ManagedAgentsRuntime,
) -> None:
    _, session_id = await new_session(runtime)

    async with runtime.stream(session_id) as items:
        await runtime.send_user_message(session_id, text("[tool:bash] list files"))
        first = events_of(await read_until_idle(items))
        tool_use = next(e for e in first if e.type == "agent.tool_use")
        assert tool_use.data["name"] == "bash"
        assert tool_use.data["evaluated_permission"] == "ask"
        assert first[-1].data["stop_reason"] == {
            "type": "requires_action",
            "event_ids": [tool_use.id],
        }
        await runtime.send_events(
            session_id,
            [{"type": "user.tool_confirmation", "tool_use_id": tool_use.id, "result": "allow"}],
        )
        rest = events_of(await read_until_idle(items))

    types = [e.type for e in rest]
    assert types[0] == "user.tool_confirmation"
    assert "agent.tool_result" in types
    assert rest[-1].data["stop_reason"] == {"type": "end_turn"}


async def test_a_denied_tool_call_is_answered_without_running_it(
    runtime: ManagedAgentsRuntime,
) -> None:
    _, session_id = await new_session(runtime)

    async with runtime.stream(session_id) as items:
        await runtime.send_user_message(session_id, text("[tool:web_fetch] fetch it"))
        first = events_of(await read_until_idle(items))
        [waiting] = first[-1].data["stop_reason"]["event_ids"]
        await runtime.send_events(
            session_id,
            [
                {
                    "type": "user.tool_confirmation",
                    "tool_use_id": waiting,
                    "result": "deny",
                    "deny_message": "not today",
                }
            ],
        )
        rest = events_of(await read_until_idle(items))

    assert "agent.tool_result" not in [e.type for e in rest]
    message = next(e for e in rest if e.type == "agent.message")
    assert "denied: not today" in message.data["content"][0]["text"]


async def test_a_custom_tool_waits_for_its_result(runtime: ManagedAgentsRuntime) -> None:
    _, session_id = await new_session(runtime)

    async with runtime.stream(session_id) as items:
        await runtime.send_user_message(session_id, text("[custom:escalate_to_human] help"))
        first = events_of(await read_until_idle(items))
        use = next(e for e in first if e.type == "agent.custom_tool_use")
        assert first[-1].data["stop_reason"]["event_ids"] == [use.id]
        await runtime.send_events(
            session_id,
            [
                {
                    "type": "user.custom_tool_result",
                    "custom_tool_use_id": use.id,
                    "content": text("a human is on it"),
                }
            ],
        )
        rest = events_of(await read_until_idle(items))

    message = next(e for e in rest if e.type == "agent.message")
    assert "a human is on it" in message.data["content"][0]["text"]


async def test_an_interrupt_stops_the_turn_and_idles(
    fake: FakeAnthropic, runtime: ManagedAgentsRuntime
) -> None:
    _, session_id = await new_session(runtime)

    async with runtime.stream(session_id) as items:
        await runtime.send_user_message(session_id, text("[slow:0.05] a slow answer"))
        async for item in items:
            if isinstance(item, TextDelta):
                break
        await runtime.send_events(session_id, [{"type": "user.interrupt"}])
        rest = events_of(await read_until_idle(items))

    assert [e.type for e in rest] == [
        "user.interrupt",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert "agent.message" not in [e["type"] for e in fake.history(session_id)]
    assert await runtime.session_status(session_id) == "idle"


async def test_a_failing_model_ends_the_turn_with_a_session_error(
    runtime: ManagedAgentsRuntime,
) -> None:
    _, session_id = await new_session(runtime)

    async with runtime.stream(session_id) as items:
        await runtime.send_user_message(session_id, text("[fail:overloaded] hi"))
        seen = events_of(await read_until_idle(items))

    error = next(e for e in seen if e.type == "session.error")
    assert error.data["error"]["type"] == "model_overloaded_error"
    assert seen[-1].data["stop_reason"] == {"type": "retries_exhausted"}


async def test_an_event_type_the_sdk_does_not_know_passes_through_unchanged(
    fake: FakeAnthropic, runtime: ManagedAgentsRuntime
) -> None:
    _, session_id = await new_session(runtime)
    novel = {"type": "agent.brand_new_thing", "detail": {"answer": 42}}

    async with runtime.stream(session_id) as items:
        fake.world.emit(session_id, novel)
        item = await anext(aiter(items))

    assert isinstance(item, RuntimeEvent)
    assert item.type == "agent.brand_new_thing"
    assert item.data["detail"] == {"answer": 42}
    [listed] = await runtime.list_events(session_id)
    assert listed.data == item.data


async def test_a_wrong_api_key_is_runtime_auth(fake: FakeAnthropic) -> None:
    runtime = make_runtime(fake, api_key="sk-ant-wrong")

    with pytest.raises(RuntimeFailure) as failure:
        await runtime.deploy_agent(SPEC)

    assert failure.value.code == "runtime_auth"
    assert "401" in failure.value.message
    assert not failure.value.retryable
    await runtime.close()


async def test_a_429_is_retried_by_the_sdk_then_succeeds(
    fake: FakeAnthropic, runtime: ManagedAgentsRuntime
) -> None:
    ref = await runtime.deploy_agent(SPEC)
    fake.fail_next("/v1/sessions", 429, method="POST")

    session_id = await runtime.create_session(ref, title="t", metadata={})

    assert session_id in fake.world.sessions
    assert len(fake.requests_to("POST", "/v1/sessions")) == 2


async def test_a_persistent_529_is_runtime_overloaded(
    fake: FakeAnthropic, runtime: ManagedAgentsRuntime
) -> None:
    fake.fail_next("/v1/environments", 529, times=10)

    with pytest.raises(RuntimeFailure) as failure:
        await runtime.deploy_agent(SPEC)

    assert failure.value.code == "runtime_overloaded"
    assert failure.value.retryable
    assert len(fake.requests_to("POST", "/v1/environments")) == 3


async def test_send_user_message_is_not_retried_on_500(
    fake: FakeAnthropic, runtime: ManagedAgentsRuntime
) -> None:
    _, session_id = await new_session(runtime)
    fake.fail_next("/events", 500, method="POST")

    with pytest.raises(RuntimeFailure) as failure:
        await runtime.send_user_message(session_id, text("only once"))

    assert failure.value.code == "runtime_unavailable"
    assert failure.value.retryable
    assert len(fake.sent_events(session_id, "user.message")) == 1
    assert fake.history(session_id) == []


async def test_an_unanswered_request_is_runtime_timeout(fake: FakeAnthropic) -> None:
    client = anthropic.AsyncAnthropic(
        api_key=fake.api_key, base_url=fake.base_url, max_retries=0, timeout=0.1
    )
    runtime = ManagedAgentsRuntime(client)
    fake.response_delay = 0.3

    with pytest.raises(RuntimeFailure) as failure:
        await runtime.session_status("sesn_any")

    assert failure.value.code == "runtime_timeout"
    assert failure.value.retryable
    await runtime.close()


async def test_an_unknown_session_is_a_bad_request(runtime: ManagedAgentsRuntime) -> None:
    with pytest.raises(RuntimeFailure) as failure:
        async with runtime.stream("sesn_missing"):
            pass

    assert failure.value.code == "runtime_bad_request"
    assert "404" in failure.value.message


async def test_without_an_api_key_every_call_is_runtime_not_configured() -> None:
    runtime = build_runtime(None, None)
    ref = RuntimeAgentRef("agent_1", 1, "env_1")
    calls = [
        runtime.deploy_agent(SPEC),
        runtime.create_session(ref, title="t", metadata={}),
        runtime.send_user_message("sesn_1", text("hi")),
        runtime.send_events("sesn_1", [{"type": "user.interrupt"}]),
        runtime.list_events("sesn_1"),
        runtime.session_status("sesn_1"),
    ]
    for call in calls:
        with pytest.raises(RuntimeFailure) as failure:
            await call
        assert failure.value.code == "runtime_not_configured"
        assert "ANTHROPIC_API_KEY" in failure.value.message
    with pytest.raises(RuntimeFailure):
        async with runtime.stream("sesn_1"):
            pass


async def test_the_in_process_scripted_runtime_runs_the_same_turn() -> None:
    runtime = ScriptedRuntime()
    runtime.world.delta_delay = 0
    ref = await runtime.deploy_agent(SPEC)
    session_id = await runtime.create_session(ref, title="demo", metadata={})

    async with runtime.stream(session_id) as items:
        await runtime.send_user_message(session_id, text("hi"))
        seen = await read_until_idle(items)

    assert any(isinstance(item, TextDelta) for item in seen)
    assert [e.id for e in events_of(seen)] == [e.id for e in await runtime.list_events(session_id)]
    assert await runtime.session_status(session_id) == "idle"
    await runtime.close()
