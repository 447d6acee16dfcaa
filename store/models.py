"""The whole data model, as SQLAlchemy 2 typed models.

Every table the product needs exists from the first migration, so later work adds columns, not
tables. Times are timezone-aware UTC; ids are opaque prefixed strings (see `store.ids`); money is
`Numeric(18, 6)` dollars.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Money = Numeric(18, 6, asdecimal=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both databases (SQLite would otherwise hand back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class Workspace(Base):
    __tablename__ = "workspaces"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = _created()


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32), default="member")
    created_at: Mapped[datetime] = _created()


class DeployedAgent(Base):
    __tablename__ = "deployed_agents"
    __table_args__ = (Index("ix_deployed_agents_workspace_created", "workspace_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(100))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    # Tool policy: the runtime toolset plus custom tools; which of them need a human's approval.
    tools: Mapped[list[Any]] = mapped_column(JSON, default=list)
    approval_required_tools: Mapped[list[Any]] = mapped_column(JSON, default=list)
    anthropic_agent_id: Mapped[str | None] = mapped_column(String(200))
    anthropic_agent_version: Mapped[int | None] = mapped_column(Integer)
    anthropic_environment_id: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class SlackBinding(Base):
    """Which agent answers in a Slack team (default) or in one of its channels."""

    __tablename__ = "slack_bindings"
    __table_args__ = (
        Index(
            "uq_slack_bindings_team_channel",
            "team_id",
            "channel_id",
            unique=True,
            postgresql_where=text("channel_id IS NOT NULL"),
            sqlite_where=text("channel_id IS NOT NULL"),
        ),
        Index(
            "uq_slack_bindings_team_default",
            "team_id",
            unique=True,
            postgresql_where=text("is_team_default"),
            sqlite_where=text("is_team_default"),
        ),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    team_id: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str | None] = mapped_column(String(64))
    deployed_agent_id: Mapped[str] = mapped_column(
        ForeignKey("deployed_agents.id", ondelete="CASCADE")
    )
    is_team_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created()


class AgentSession(Base):
    __tablename__ = "agent_sessions"
    __table_args__ = (
        Index(
            "uq_agent_sessions_agent_conversation",
            "deployed_agent_id",
            "slack_conversation_key",
            unique=True,
            postgresql_where=text("slack_conversation_key IS NOT NULL"),
            sqlite_where=text("slack_conversation_key IS NOT NULL"),
        ),
        Index("ix_agent_sessions_agent_created", "deployed_agent_id", "created_at", "id"),
        Index("ix_agent_sessions_status", "status"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    deployed_agent_id: Mapped[str] = mapped_column(
        ForeignKey("deployed_agents.id", ondelete="CASCADE")
    )
    anthropic_session_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="idle")  # idle | running | archived
    source: Mapped[str] = mapped_column(String(16))  # dashboard | slack | schedule | webhook
    title: Mapped[str] = mapped_column(String(300), default="")
    created_by: Mapped[str | None] = mapped_column(String(200))
    slack_team_id: Mapped[str | None] = mapped_column(String(64))
    slack_channel_id: Mapped[str | None] = mapped_column(String(64))
    slack_thread_ts: Mapped[str | None] = mapped_column(String(32))
    slack_conversation_key: Mapped[str | None] = mapped_column(String(200))
    # Highest seq in the mirror; bumped under the row lock when events are appended.
    last_event_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Last position handed out in session_inbox (bumped atomically, so enqueues never collide).
    inbox_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Turn ownership: which runner holds the session and until when (a lease other processes honour).
    runner_id: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    turn_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    turn_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SessionEvent(Base):
    """The mirror of a session's runtime history, plus `app.*` events the app adds itself."""

    __tablename__ = "session_events"
    __table_args__ = (
        UniqueConstraint("session_id", "seq"),
        UniqueConstraint("session_id", "runtime_event_id"),
    )
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    session_id: Mapped[str] = mapped_column(ForeignKey("agent_sessions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    runtime_event_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = _created()


class SessionInbox(Base):
    """User messages waiting for (or taken by) a turn, in order.

    `state`: queued -> sending (handed to the runtime, not yet confirmed) -> sent; or failed
    (the runtime refused it; the thread was told)."""

    __tablename__ = "session_inbox"
    __table_args__ = (
        UniqueConstraint("session_id", "position"),
        Index("ix_session_inbox_session_state", "session_id", "state", "position"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("agent_sessions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    text: Mapped[str] = mapped_column(Text, default="")
    # Extra content blocks (images, documents) passed with the text.
    content: Mapped[list[Any]] = mapped_column(JSON, default=list)
    author: Mapped[str | None] = mapped_column(String(200))
    # Dedupe across deliveries of one user message (Slack: "slack:{team}:{channel}:{ts}").
    dedupe_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    slack_ts: Mapped[str | None] = mapped_column(String(32))
    runtime_event_id: Mapped[str | None] = mapped_column(String(200))
    # The mirror's last seq when this message was handed to the runtime (crash reconciliation).
    mirror_seq_at_send: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _created()
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SlackEventReceipt(Base):
    __tablename__ = "slack_event_receipts"
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    team_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_enabled_next", "enabled", "next_fire_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    deployed_agent_id: Mapped[str] = mapped_column(
        ForeignKey("deployed_agents.id", ondelete="CASCADE")
    )
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    input_text: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    slack_team_id: Mapped[str | None] = mapped_column(String(64))
    slack_channel_id: Mapped[str | None] = mapped_column(String(64))
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    deployed_agent_id: Mapped[str] = mapped_column(
        ForeignKey("deployed_agents.id", ondelete="CASCADE")
    )
    secret: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()


class AgentTriggerRun(Base):
    __tablename__ = "agent_trigger_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "fire_time"),
        UniqueConstraint("webhook_endpoint_id", "idempotency_key"),
        Index("ix_agent_trigger_runs_agent_created", "deployed_agent_id", "created_at", "id"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    deployed_agent_id: Mapped[str] = mapped_column(
        ForeignKey("deployed_agents.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))  # schedule | webhook
    schedule_id: Mapped[str | None] = mapped_column(ForeignKey("schedules.id", ondelete="SET NULL"))
    webhook_endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="SET NULL")
    )
    fire_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    idempotency_key: Mapped[str | None] = mapped_column(String(300))
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("agent_sessions.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(16), default="started")  # started | ok | error
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AgentEscalation(Base):
    __tablename__ = "agent_escalations"
    __table_args__ = (Index("ix_agent_escalations_workspace_status", "workspace_id", "status"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(ForeignKey("agent_sessions.id", ondelete="CASCADE"))
    tool_use_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | resolved
    created_at: Mapped[datetime] = _created()
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(200))


class ToolApproval(Base):
    __tablename__ = "tool_approvals"
    __table_args__ = (UniqueConstraint("session_id", "tool_use_id"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(ForeignKey("agent_sessions.id", ondelete="CASCADE"))
    tool_use_id: Mapped[str] = mapped_column(String(200))
    tool_name: Mapped[str] = mapped_column(String(200))
    tool_input: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    decision: Mapped[str | None] = mapped_column(String(16))  # allow | deny
    reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    slack_channel_id: Mapped[str | None] = mapped_column(String(64))
    slack_message_ts: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = _created()


class AgentComputeUsage(Base):
    __tablename__ = "agent_compute_usage"
    __table_args__ = (UniqueConstraint("session_id", "turn"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(ForeignKey("agent_sessions.id", ondelete="CASCADE"))
    turn: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(100), default="")
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_creation_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    runtime_seconds: Mapped[Decimal] = mapped_column(Numeric(18, 3), default=Decimal(0))
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    created_at: Mapped[datetime] = _created()


class UsageLog(Base):
    """One priced tool call."""

    __tablename__ = "usage_logs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("agent_sessions.id", ondelete="SET NULL")
    )
    tool_use_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    tool_name: Mapped[str] = mapped_column(String(200))
    units: Mapped[Decimal] = mapped_column(Numeric(18, 6), default=Decimal(1))
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    created_at: Mapped[datetime] = _created()


class Wallet(Base):
    __tablename__ = "wallets"
    __table_args__ = (UniqueConstraint("workspace_id", "kind"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))  # ai | data
    balance_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class WalletLedger(Base):
    __tablename__ = "wallet_ledger"
    __table_args__ = (Index("ix_wallet_ledger_workspace_created", "workspace_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))
    amount_usd: Mapped[Decimal] = mapped_column(Money)  # negative for a debit
    balance_after_usd: Mapped[Decimal] = mapped_column(Money)
    reason: Mapped[str] = mapped_column(String(32))  # starting_credit | topup | turn | tool_call
    ref: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
