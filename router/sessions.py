"""Agents and sessions as the edges use them: deploy, create, message, interrupt, archive, read.

Every call is scoped to the actor's workspace: another workspace's agent or session is simply
not found (the dashboard answers 404, exactly as for an id that does not exist).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from router import approvals, cursors, escalations
from router.errors import (
    AgentNotFound,
    Conflict,
    NotFound,
    RuntimeFailure,
    SessionArchived,
    SessionNotFound,
)
from router.ports import AgentRuntime
from router.turns import TurnRunner, append_app_event, record_of, spec_of, thread_of
from router.types import (
    Actor,
    AgentView,
    EventRecord,
    MessageReceipt,
    Page,
    SessionView,
    SlackBindingView,
)
from store import agents as agents_store
from store import events as events_store
from store import queue as queue_store
from store import sessions as sessions_store
from store import usage as usage_store
from store import wallets as wallets_store
from store import workspaces as workspaces_store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SlackBindingRequest:
    team_id: str
    channel_ids: tuple[str, ...]
    default: bool


def session_view(row: Any, queued: int) -> SessionView:
    return SessionView(
        id=row.id,
        deployed_agent_id=row.deployed_agent_id,
        workspace_id=row.workspace_id,
        anthropic_session_id=row.anthropic_session_id,
        status=row.status,
        queued=queued,
        source=row.source,
        title=row.title,
        created_by=row.created_by,
        slack=thread_of(row),
        created_at=row.created_at,
        updated_at=row.updated_at,
        archived_at=row.archived_at,
    )


def agent_view(row: Any, bindings: list[Any]) -> AgentView:
    slack = None
    if bindings:
        slack = SlackBindingView(
            team_id=bindings[0].team_id,
            channel_ids=tuple(b.channel_id for b in bindings if b.channel_id),
            default=any(b.is_team_default for b in bindings),
        )
    return AgentView(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        model=row.model,
        system=row.system_prompt,
        approval_required_tools=tuple(row.approval_required_tools or ()),
        anthropic_agent_id=row.anthropic_agent_id,
        slack=slack,
        created_at=row.created_at,
    )


class SessionService:
    def __init__(
        self,
        db: Any,
        runner: TurnRunner,
        runtime: AgentRuntime,
        *,
        starting_credit: Decimal = Decimal("5.00"),
    ) -> None:
        self.db = db
        self.runner = runner
        self.runtime = runtime
        self.starting_credit = starting_credit
        self._known_actors: set[Actor] = set()

    async def ensure_actor(self, actor: Actor) -> None:
        """A token for a workspace not seen yet works at once: create workspace and member."""
        if actor in self._known_actors:
            return
        async with self.db.begin() as s:
            await workspaces_store.ensure_workspace(
                s, actor.workspace_id, starting_credit=self.starting_credit
            )
            await workspaces_store.ensure_member(s, actor.workspace_id, actor.user_id)
        self._known_actors.add(actor)

    # -- agents -------------------------------------------------------------------------------

    async def deploy_agent(
        self,
        actor: Actor,
        *,
        name: str,
        model: str,
        system: str,
        approval_required_tools: list[str],
        slack: SlackBindingRequest | None,
    ) -> AgentView:
        await self.ensure_actor(actor)
        async with self.db.begin() as s:
            row = await agents_store.create_agent(
                s,
                workspace_id=actor.workspace_id,
                name=name,
                model=model,
                system_prompt=system,
                tools=[],
                approval_required_tools=approval_required_tools,
                created_by=actor.user_id,
            )
            if slack is not None and not await agents_store.bind_slack(
                s,
                workspace_id=actor.workspace_id,
                agent_id=row.id,
                team_id=slack.team_id,
                channel_ids=list(slack.channel_ids),
                team_default=slack.default,
            ):
                raise Conflict(
                    f"Slack team {slack.team_id} is connected to another workspace; "
                    "it cannot be bound here"
                )
        try:
            await self.runner.ensure_deployed(row)
        except RuntimeFailure as exc:
            # The row stands; the first turn deploys it (and reports the failure if it persists).
            log.warning(
                "agent not deployed to the runtime yet",
                extra={"agent_id": row.id, "code": exc.code, "detail": exc.message},
            )
        return await self.get_agent(actor, row.id)

    async def get_agent(self, actor: Actor, agent_id: str) -> AgentView:
        async with self.db() as s:
            row = await agents_store.get_agent(s, agent_id, workspace_id=actor.workspace_id)
            if row is None:
                raise AgentNotFound(f"no agent {agent_id}")
            return agent_view(row, await agents_store.list_bindings(s, row.id))

    async def list_agents(self, actor: Actor, *, limit: int, cursor: str | None) -> Page:
        after = cursors.decode(cursor) if cursor else None
        async with self.db() as s:
            rows, more = await agents_store.list_agents(
                s, actor.workspace_id, limit=limit, cursor=after
            )
            items = [agent_view(r, await agents_store.list_bindings(s, r.id)) for r in rows]
        next_cursor = cursors.next_of(rows, more)
        return Page(items, more, next_cursor)

    # -- sessions -----------------------------------------------------------------------------

    async def create_session(
        self, actor: Actor, agent_id: str, *, text: str | None = None, title: str = ""
    ) -> tuple[SessionView, MessageReceipt | None]:
        await self.ensure_actor(actor)
        async with self.db.begin() as s:
            agent = await agents_store.get_agent(s, agent_id, workspace_id=actor.workspace_id)
            if agent is None:
                raise AgentNotFound(f"no agent {agent_id}")
            row = await sessions_store.create_session(
                s,
                workspace_id=actor.workspace_id,
                deployed_agent_id=agent.id,
                source="dashboard",
                title=title or (text or "")[:80],
                created_by=actor.user_id,
            )
            message = None
            if text is not None:
                await self.runner.billing.check_can_run(s, actor.workspace_id)
                message = await queue_store.enqueue(s, row.id, text=text, author=actor.user_id)
        receipt = None
        if message is not None:
            self.runner.kick(row.id)
            receipt = MessageReceipt(message.id, row.id, "queued", 1)
        return await self.get_session(actor, agent_id, row.id), receipt

    async def _session_row(self, s: Any, actor: Actor, agent_id: str, session_id: str) -> Any:
        row = await sessions_store.get_session(
            s, session_id, workspace_id=actor.workspace_id, agent_id=agent_id
        )
        if row is None:
            raise SessionNotFound(f"no session {session_id} for agent {agent_id}")
        return row

    async def get_session(self, actor: Actor, agent_id: str, session_id: str) -> SessionView:
        async with self.db() as s:
            found = await sessions_store.get_session_and_queued(
                s, session_id, workspace_id=actor.workspace_id, agent_id=agent_id
            )
        if found is None:
            raise SessionNotFound(f"no session {session_id} for agent {agent_id}")
        return session_view(*found)

    async def list_sessions(
        self,
        actor: Actor,
        agent_id: str,
        *,
        limit: int,
        cursor: str | None,
        status: str | None = None,
        source: str | None = None,
    ) -> Page:
        after = cursors.decode(cursor) if cursor else None
        async with self.db() as s:
            if await agents_store.get_agent(s, agent_id, workspace_id=actor.workspace_id) is None:
                raise AgentNotFound(f"no agent {agent_id}")
            rows, more = await sessions_store.list_sessions(
                s, agent_id=agent_id, limit=limit, status=status, source=source, cursor=after
            )
            counts = await sessions_store.queued_counts(s, [r.id for r in rows])
        items = [session_view(r, counts[r.id]) for r in rows]
        next_cursor = cursors.next_of(rows, more)
        return Page(items, more, next_cursor)

    async def post_message(
        self, actor: Actor, agent_id: str, session_id: str, *, text: str
    ) -> MessageReceipt:
        """Queue a user message; it is sent when the turn before it ends (202 on the API)."""
        async with self.db.begin() as s:
            row = await self._session_row(s, actor, agent_id, session_id)
            if row.status == "archived":
                raise SessionArchived(f"session {session_id} is archived; it takes no messages")
            await self.runner.billing.check_can_run(s, actor.workspace_id)
            message = await queue_store.enqueue(s, session_id, text=text, author=actor.user_id)
            queued = (await sessions_store.queued_counts(s, [session_id]))[session_id]
            status = row.status
        self.runner.kick(session_id)
        return MessageReceipt(message.id, session_id, status, queued)

    async def interrupt(self, actor: Actor, agent_id: str, session_id: str) -> SessionView:
        """Stop the turn in flight (if any); queued messages stay queued and run after it."""
        async with self.db() as s:
            row = await self._session_row(s, actor, agent_id, session_id)
        if row.status == "running" and row.anthropic_session_id:
            await self.runtime.send_events(row.anthropic_session_id, [{"type": "user.interrupt"}])
        return await self.get_session(actor, agent_id, session_id)

    async def archive(self, actor: Actor, agent_id: str, session_id: str) -> SessionView:
        """Read-only from now on: new messages are refused and a turn in flight is stopped."""
        async with self.db.begin() as s:
            row = await self._session_row(s, actor, agent_id, session_id)
            was_running = row.status == "running"
            archived_now = await sessions_store.archive_session(s, session_id)
        if archived_now:
            # An event of its own, so live watchers (the transcript page) see it at once.
            await append_app_event(
                self.runner, session_id, "app.session_archived", {"by": actor.user_id}
            )
        if was_running and row.anthropic_session_id:
            try:
                await self.runtime.send_events(
                    row.anthropic_session_id, [{"type": "user.interrupt"}]
                )
            except RuntimeFailure as exc:
                log.warning(
                    "could not stop the archived session's turn",
                    extra={"session_id": session_id, "code": exc.code},
                )
        return await self.get_session(actor, agent_id, session_id)

    async def events(
        self,
        actor: Actor,
        agent_id: str,
        session_id: str,
        *,
        limit: int,
        after: int | None = None,
        before: int | None = None,
        descending: bool = False,
    ) -> tuple[list[EventRecord], bool]:
        async with self.db() as s:
            await self._session_row(s, actor, agent_id, session_id)
            rows, more = await events_store.list_events(
                s, session_id, limit=limit, after=after, before=before, descending=descending
            )
        return [record_of(session_id, r) for r in rows], more

    async def attach_slack_thread(
        self, session_id: str, *, team_id: str, channel_id: str, thread_ts: str
    ) -> None:
        """The session's answer was posted as a new channel message (a schedule's): replies in
        that message's thread now continue this session."""
        async with self.db.begin() as s:
            await sessions_store.attach_slack_thread(
                s, session_id, team_id=team_id, channel_id=channel_id, thread_ts=thread_ts
            )

    async def load_records(
        self, session_id: str, after: int | None, up_to: int | None
    ) -> list[EventRecord]:
        """Mirrored events of a session in (after, up_to] (the live bus across processes)."""
        async with self.db() as s:
            rows, _ = await events_store.list_events(
                s,
                session_id,
                limit=1000,
                after=after,
                before=None if up_to is None else up_to + 1,
            )
        return [record_of(session_id, r) for r in rows]

    async def check_session(self, actor: Actor, agent_id: str, session_id: str) -> None:
        """Raise unless the actor may watch this session."""
        async with self.db() as s:
            await self._session_row(s, actor, agent_id, session_id)

    # -- approvals, escalations, usage, wallets -----------------------------------------------

    async def decide_approval(
        self,
        actor: Actor,
        agent_id: str,
        session_id: str,
        tool_use_id: str,
        *,
        allow: bool,
        reason: str | None,
    ) -> approvals.ApprovalDecision:
        return await approvals.decide(
            self.db,
            self.runtime,
            workspace_id=actor.workspace_id,
            agent_id=agent_id,
            session_id=session_id,
            tool_use_id=tool_use_id,
            allow=allow,
            reason=reason,
            decided_by=actor.user_id,
        )

    async def list_escalations(
        self, actor: Actor, *, limit: int, cursor: str | None, status: str | None = None
    ) -> Page:
        return await escalations.list_escalations(
            self.db, actor.workspace_id, limit=limit, cursor=cursor, status=status
        )

    async def resolve_escalation(
        self, actor: Actor, escalation_id: str
    ) -> escalations.EscalationView:
        return await escalations.resolve(
            self.db, actor.workspace_id, escalation_id, by=actor.user_id
        )

    async def usage(self, actor: Actor, agent_id: str, session_id: str) -> UsageReport:
        async with self.db() as s:
            await self._session_row(s, actor, agent_id, session_id)
            rows = await usage_store.turns_of(s, session_id)
        turns = [
            TurnUsageView(
                turn=r.turn,
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                cache_read_input_tokens=r.cache_read_input_tokens,
                cache_creation_input_tokens=r.cache_creation_input_tokens,
                runtime_seconds=r.runtime_seconds,
                cost_usd=r.cost_usd,
            )
            for r in rows
        ]
        total = TurnUsageView(
            turn=None,
            input_tokens=sum(t.input_tokens for t in turns),
            output_tokens=sum(t.output_tokens for t in turns),
            cache_read_input_tokens=sum(t.cache_read_input_tokens for t in turns),
            cache_creation_input_tokens=sum(t.cache_creation_input_tokens for t in turns),
            runtime_seconds=sum((t.runtime_seconds for t in turns), Decimal(0)),
            cost_usd=sum((t.cost_usd for t in turns), Decimal(0)),
        )
        return UsageReport(turns, total)

    async def wallets(self, actor: Actor, *, ledger_limit: int = 100) -> WalletReport:
        await self.ensure_actor(actor)
        async with self.db() as s:
            balances = await wallets_store.balances(s, actor.workspace_id)
            ledger = await wallets_store.ledger(s, actor.workspace_id, limit=ledger_limit)
        return WalletReport(
            balances=dict(sorted(balances.items())),
            ledger=[
                LedgerEntry(
                    r.id, r.kind, r.amount_usd, r.balance_after_usd, r.reason, r.ref, r.created_at
                )
                for r in ledger
            ],
        )


@dataclass(frozen=True, slots=True)
class TurnUsageView:
    turn: int | None
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    runtime_seconds: Decimal
    cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class UsageReport:
    turns: list[TurnUsageView]
    total: TurnUsageView


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str
    kind: str
    amount_usd: Decimal
    balance_after_usd: Decimal
    reason: str
    ref: str | None
    created_at: Any


@dataclass(frozen=True, slots=True)
class WalletReport:
    balances: dict[str, Decimal]
    ledger: list[LedgerEntry]


async def top_up(db: Any, workspace_id: str, amount: Decimal, *, kind: str = "ai") -> Decimal:
    """Operator top-up (`python app.py wallet topup`)."""
    async with db.begin() as s:
        balance = await wallets_store.credit(s, workspace_id, kind, amount, reason="topup")
    if balance is None:
        raise NotFound(f"workspace {workspace_id} has no {kind} wallet (it has never been used)")
    return balance


__all__ = ["SessionService", "SlackBindingRequest", "spec_of", "top_up"]
