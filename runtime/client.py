"""The managed-agents runtime over Anthropic's SDK (`AsyncAnthropic().beta`): the app's
`router.ports.AgentRuntime`.

Every SDK failure leaves this module as `router.errors.RuntimeFailure`. Reads and creates use the
SDK's own retries (the caller builds the client with `max_retries=2`); sends of user events do
not, because the endpoint has no idempotency key and a retried send can post a message twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any, NoReturn

import anthropic
import httpx2

from router.errors import RuntimeFailure
from router.ports import AgentRuntime, AgentSpec, RuntimeAgentRef, RuntimeEvent, TextDelta
from runtime.events import from_wire, wire_dict

logger = logging.getLogger(__name__)

TOOLSET_TYPE = "agent_toolset_20260401"
# The tools of the runtime's toolset; a name outside this list has no per-tool config.
TOOLSET_TOOLS = ("bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search")


def agent_tools(spec: AgentSpec) -> list[dict[str, Any]]:
    """The agent's `tools`: the whole toolset, each tool `always_ask` when it needs a human's
    approval and `always_allow` otherwise, then the custom tools we run ourselves."""
    gated = set(spec.approval_required_tools)
    configs = [
        {
            "name": name,
            "permission_policy": {"type": "always_ask" if name in gated else "always_allow"},
        }
        for name in TOOLSET_TOOLS
    ]
    toolset: dict[str, Any] = {
        "type": TOOLSET_TYPE,
        "default_config": {"permission_policy": {"type": "always_allow"}},
        "configs": configs,
    }
    custom = [
        {
            "type": "custom",
            "name": tool["name"],
            "description": tool.get("description", ""),
            "input_schema": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        for tool in spec.custom_tools
    ]
    return [toolset, *custom]


class ManagedAgentsRuntime:
    """`AgentRuntime` over an `anthropic.AsyncAnthropic` client built by the caller."""

    def __init__(self, client: anthropic.AsyncAnthropic, *, page_size: int = 100) -> None:
        self._client = client
        self._no_retry = client.with_options(max_retries=0)
        self._page_size = page_size

    async def close(self) -> None:
        await self._client.close()

    async def deploy_agent(
        self, spec: AgentSpec, *, existing: RuntimeAgentRef | None = None
    ) -> RuntimeAgentRef:
        beta = self._client.beta
        tools: Any = agent_tools(spec)
        with _translated("deploy the agent"):
            environment_id = existing.environment_id if existing else ""
            if not environment_id:
                environment = await beta.environments.create(
                    name=f"{spec.name} environment",
                    config={"type": "cloud", "networking": {"type": "unrestricted"}},
                    metadata=dict(spec.metadata),
                )
                environment_id = environment.id
            if existing:
                agent = await beta.agents.update(
                    existing.agent_id,
                    model=spec.model,
                    name=spec.name,
                    system=spec.system,
                    tools=tools,
                    metadata=dict(spec.metadata),
                )
            else:
                agent = await beta.agents.create(
                    model=spec.model,
                    name=spec.name,
                    system=spec.system,
                    tools=tools,
                    metadata=dict(spec.metadata),
                )
        logger.info(
            "agent deployed",
            extra={"agent_id": agent.id, "agent_version": agent.version, "updated": bool(existing)},
        )
        return RuntimeAgentRef(
            agent_id=agent.id, agent_version=agent.version, environment_id=environment_id
        )

    async def create_session(
        self, agent: RuntimeAgentRef, *, title: str, metadata: dict[str, str]
    ) -> str:
        agent_param: Any = agent.agent_id
        if agent.agent_version is not None:
            agent_param = {"type": "agent", "id": agent.agent_id, "version": agent.agent_version}
        with _translated("create a session"):
            session = await self._client.beta.sessions.create(
                agent=agent_param,
                environment_id=agent.environment_id,
                title=title,
                metadata=metadata,
            )
        return session.id

    def stream(
        self, session_id: str
    ) -> AbstractAsyncContextManager[AsyncIterator[RuntimeEvent | TextDelta]]:
        return self._stream(session_id)

    @asynccontextmanager
    async def _stream(
        self, session_id: str
    ) -> AsyncIterator[AsyncIterator[RuntimeEvent | TextDelta]]:
        with _translated("open the event stream"):
            sdk_stream = await self._client.beta.sessions.events.stream(
                session_id, event_deltas=["agent.message"]
            )
        items = _read_stream(sdk_stream, session_id)
        try:
            yield items
        finally:
            # The caller may still be iterating from another task; closing the response ends it.
            with contextlib.suppress(RuntimeError):
                await items.aclose()
            await sdk_stream.close()

    async def send_user_message(self, session_id: str, content: list[dict[str, Any]]) -> None:
        await self._send(session_id, [{"type": "user.message", "content": content}])

    async def send_events(self, session_id: str, events: list[dict[str, Any]]) -> None:
        """Not retried either: a repeated tool confirmation or custom tool result is refused by the
        runtime, so the caller decides (`RuntimeFailure.retryable`). Interrupts alone are safe to
        repeat and use the SDK's retries."""
        retry = bool(events) and all(event.get("type") == "user.interrupt" for event in events)
        await self._send(session_id, events, retry=retry)

    async def _send(
        self, session_id: str, events: list[dict[str, Any]], *, retry: bool = False
    ) -> None:
        client = self._client if retry else self._no_retry
        payload: Any = events
        with _translated("send events"):
            await client.beta.sessions.events.send(session_id, events=payload)

    async def list_events(
        self, session_id: str, *, after: datetime | None = None
    ) -> list[RuntimeEvent]:
        query: dict[str, Any] = {"order": "asc", "limit": self._page_size}
        if after is not None:
            query["created_at_gt"] = after
        found: list[RuntimeEvent] = []
        with _translated("list events"):
            async for event in self._client.beta.sessions.events.list(session_id, **query):
                item = from_wire(wire_dict(event))
                if not isinstance(item, RuntimeEvent):
                    continue
                if after is not None and item.processed_at is not None:
                    if item.processed_at <= after:
                        continue
                found.append(item)
        return found

    async def session_status(self, session_id: str) -> str:
        with _translated("read the session"):
            session = await self._client.beta.sessions.retrieve(session_id)
        return session.status


async def _read_stream(
    sdk_stream: anthropic.AsyncStream[Any], session_id: str
) -> AsyncIterator[RuntimeEvent | TextDelta]:
    """The stream's items; ends quietly when the connection drops (the caller backfills with
    `list_events`), raises `RuntimeFailure` for an `error` frame."""
    try:
        async for event in sdk_stream:
            item = from_wire(wire_dict(event))
            if item is not None:
                yield item
    except (httpx2.TransportError, httpx2.StreamError, anthropic.APIConnectionError) as exc:
        logger.info(
            "event stream dropped",
            extra={"session_id": session_id, "reason": type(exc).__name__},
        )
    except anthropic.APIStatusError as exc:
        _raise_failure(exc, "read the event stream")


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except anthropic.APIError as exc:
        _raise_failure(exc, action)


def _raise_failure(exc: anthropic.APIError, action: str) -> NoReturn:
    failure = runtime_failure(exc)
    logger.warning(
        "anthropic call failed",
        extra={"action": action, "code": failure.code, "status": getattr(exc, "status_code", None)},
    )
    raise failure from exc


def runtime_failure(exc: anthropic.APIError) -> RuntimeFailure:
    """An SDK error as the core's `RuntimeFailure`, with a short message a user can read."""
    if isinstance(exc, anthropic.APITimeoutError):
        return RuntimeFailure("runtime_timeout", "Anthropic did not answer in time", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError):
        return RuntimeFailure("runtime_unavailable", "Could not reach Anthropic", retryable=True)
    if not isinstance(exc, anthropic.APIStatusError):
        return RuntimeFailure("runtime_bad_request", f"Anthropic's answer was unreadable: {exc}")
    status = exc.status_code
    if status == 401:
        return RuntimeFailure("runtime_auth", "Anthropic rejected the API key (401)")
    if status == 403:
        return RuntimeFailure(
            "runtime_auth", "The API key is not allowed to use managed agents (403)"
        )
    if status == 429:
        return RuntimeFailure(
            "runtime_rate_limited", "Anthropic is rate limiting this key (429)", retryable=True
        )
    if status == 529:
        return RuntimeFailure("runtime_overloaded", "Anthropic is overloaded (529)", retryable=True)
    if status == 408:
        return RuntimeFailure("runtime_timeout", "Anthropic timed out (408)", retryable=True)
    if status >= 500:
        return RuntimeFailure(
            "runtime_unavailable", f"Anthropic had a server error ({status})", retryable=True
        )
    return RuntimeFailure(
        "runtime_bad_request", f"Anthropic refused the request ({status}): {_api_message(exc)}"
    )


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:200]
    return exc.message[:200]


class UnconfiguredRuntime:
    """The runtime when no API key is set: every call fails with `runtime_not_configured`."""

    def _fail(self) -> NoReturn:
        raise RuntimeFailure(
            "runtime_not_configured",
            "ANTHROPIC_API_KEY is not set: agents cannot be deployed or run",
        )

    async def deploy_agent(
        self, spec: AgentSpec, *, existing: RuntimeAgentRef | None = None
    ) -> RuntimeAgentRef:
        self._fail()

    async def create_session(
        self, agent: RuntimeAgentRef, *, title: str, metadata: dict[str, str]
    ) -> str:
        self._fail()

    def stream(
        self, session_id: str
    ) -> AbstractAsyncContextManager[AsyncIterator[RuntimeEvent | TextDelta]]:
        self._fail()

    async def send_user_message(self, session_id: str, content: list[dict[str, Any]]) -> None:
        self._fail()

    async def send_events(self, session_id: str, events: list[dict[str, Any]]) -> None:
        self._fail()

    async def list_events(
        self, session_id: str, *, after: datetime | None = None
    ) -> list[RuntimeEvent]:
        self._fail()

    async def session_status(self, session_id: str) -> str:
        self._fail()

    async def close(self) -> None:
        return None


def build_runtime(api_key: str | None, base_url: str | None, timeout: float = 60) -> AgentRuntime:
    """The Anthropic runtime, or one that explains it is not configured when there is no key."""
    if not api_key:
        return UnconfiguredRuntime()
    client = anthropic.AsyncAnthropic(
        api_key=api_key, base_url=base_url, max_retries=2, timeout=timeout
    )
    return ManagedAgentsRuntime(client)
