"""What the core needs from the outside, as small protocols with plain data.

`app.py` supplies the implementations: `runtime.client.ManagedAgentsRuntime` (Anthropic) or the
offline scripted runtime for `python app.py demo`; `bot.outbox` for Slack delivery.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """One event of a session's canonical history, as the runtime gave it.

    `data` is the whole event as JSON-ready dict (it is mirrored as is); `id` and `type` are
    copied out of it."""

    id: str
    type: str
    data: dict[str, Any]
    processed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A streamed fragment of an `agent.message` still being written (best effort; the final
    `agent.message` RuntimeEvent is the truth)."""

    event_id: str
    text: str


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    model: str
    system: str
    # Runtime toolset tools that need a human's approval (`always_ask`); the rest `always_allow`.
    approval_required_tools: tuple[str, ...] = ()
    # Custom tools we run ourselves: {"name", "description", "input_schema"}.
    custom_tools: tuple[dict[str, Any], ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuntimeAgentRef:
    agent_id: str
    agent_version: int | None
    environment_id: str


class AgentRuntime(Protocol):
    """The managed-agents runtime. Every method raises `router.errors.RuntimeFailure` on failure
    (after the SDK's own retries where retrying is safe)."""

    async def deploy_agent(
        self, spec: AgentSpec, *, existing: RuntimeAgentRef | None = None
    ) -> RuntimeAgentRef:
        """Create the runtime agent and its environment, or update the existing agent (a new
        version) and reuse its environment."""
        ...

    async def create_session(
        self, agent: RuntimeAgentRef, *, title: str, metadata: dict[str, str]
    ) -> str:
        """Create a runtime session; returns its id."""
        ...

    def stream(
        self, session_id: str
    ) -> AbstractAsyncContextManager[AsyncIterator[RuntimeEvent | TextDelta]]:
        """Open the live event stream (with agent.message deltas). Open it before sending: it
        carries only events produced after it opened. The iterator ends when the connection
        drops (it never raises for a plain disconnect: the caller resumes with `list_events`)."""
        ...

    async def send_user_message(self, session_id: str, content: list[dict[str, Any]]) -> None:
        """Send one `user.message`, never retried automatically (no idempotency key exists)."""
        ...

    async def send_events(self, session_id: str, events: list[dict[str, Any]]) -> None:
        """Send user.tool_confirmation / user.custom_tool_result / user.interrupt events."""
        ...

    async def list_events(
        self, session_id: str, *, after: datetime | None = None
    ) -> list[RuntimeEvent]:
        """The session's history in order (all pages), optionally only events processed after
        `after`."""
        ...

    async def session_status(self, session_id: str) -> str:
        """`idle`, `running`, `rescheduling` or `terminated`."""
        ...

    async def close(self) -> None:
        """Release connections (at shutdown)."""
        ...


class Outbox(Protocol):
    """Delivers a session's turn to where its conversation lives (Slack thread), best effort."""

    async def deliver(self, delivery: Any) -> None: ...
