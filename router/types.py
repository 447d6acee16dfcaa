"""Plain data the core passes around (no wire types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class SessionStatus(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    ARCHIVED = "archived"


class Source(StrEnum):
    DASHBOARD = "dashboard"
    SLACK = "slack"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a dashboard member (workspace + user) or a Slack user."""

    workspace_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class SlackThread:
    team_id: str
    channel_id: str
    thread_ts: str

    @property
    def conversation_key(self) -> str:
        return f"{self.team_id}:{self.channel_id}:{self.thread_ts}"


@dataclass(frozen=True, slots=True)
class InboundSlackMessage:
    """A Slack message the bot should take, already parsed by the Slack edge."""

    event_id: str | None
    team_id: str
    channel_id: str
    ts: str
    thread_ts: str | None
    user_id: str
    text: str
    is_dm: bool
    is_mention: bool
    content: tuple[dict[str, Any], ...] = ()

    @property
    def thread(self) -> SlackThread:
        return SlackThread(self.team_id, self.channel_id, self.thread_ts or self.ts)

    @property
    def dedupe_key(self) -> str:
        return f"slack:{self.team_id}:{self.channel_id}:{self.ts}"


@dataclass(frozen=True, slots=True)
class MessageReceipt:
    """What accepting a message gives back (the contract's Message answer)."""

    message_id: str
    session_id: str
    status: str
    queued: int


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One mirrored event, as the dashboard and the bus carry it."""

    seq: int
    id: str
    type: str
    created_at: datetime
    data: dict[str, Any]
    session_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "type": self.type,
            "created_at": self.created_at.isoformat(),
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What an observer (the Slack outbox) needs to know of the turn it follows."""

    session_id: str
    workspace_id: str
    agent_id: str
    agent_name: str
    source: str
    turn: int
    message_id: str
    message_text: str
    author: str | None
    slack: SlackThread | None
    slack_message_ts: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SlackBindingView:
    team_id: str
    channel_ids: tuple[str, ...]
    default: bool


@dataclass(frozen=True, slots=True)
class AgentView:
    id: str
    workspace_id: str
    name: str
    model: str
    system: str
    approval_required_tools: tuple[str, ...]
    anthropic_agent_id: str | None
    slack: SlackBindingView | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SessionView:
    id: str
    deployed_agent_id: str
    workspace_id: str
    anthropic_session_id: str | None
    status: str
    queued: int
    source: str
    title: str
    created_by: str | None
    slack: SlackThread | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    has_more: bool
    next_cursor: str | None
