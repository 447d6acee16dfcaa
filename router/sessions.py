"""Agents and sessions as the edges use them: deploy, create, message, interrupt, archive, read.

Every call is scoped to the actor's workspace: another workspace's agent or session is simply
not found (the dashboard answers 404, exactly as for an id that does not exist).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from router import cursors
from router.errors import AgentNotFound, RuntimeFailure, SessionArchived, SessionNotFound
from router.ports import AgentRuntime
from router.turns import TurnRunner, record_of, spec_of
from router.types import (
    Actor,
    AgentView,
    EventRecord,
    MessageReceipt,
    Page,
    SessionView,
    SlackBindingView,
    SlackThread,
)
from store import agents as agents_store
from store import events as events_store
from store import queue as queue_store
from store import sessions as sessions_store
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
        slack=(
            SlackThread(row.slack_team_id, row.slack_channel_id, row.slack_thread_ts)
            if row.slack_conversation_key
            else None
        ),
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
            if slack is not None:
                await agents_store.bind_slack(
                    s,
                    workspace_id=actor.workspace_id,
                    agent_id=row.id,
                    team_id=slack.team_id,
                    channel_ids=list(slack.channel_ids),
                    team_default=slack.default,
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
        next_cursor = cursors.encode(rows[-1].created_at, rows[-1].id) if more and rows else None
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
            row = await self._session_row(s, actor, agent_id, session_id)
            counts = await sessions_store.queued_counts(s, [row.id])
        return session_view(row, counts[row.id])

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
        next_cursor = cursors.encode(rows[-1].created_at, rows[-1].id) if more and rows else None
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
            await sessions_store.archive_session(s, session_id)
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

    async def check_session(self, actor: Actor, agent_id: str, session_id: str) -> None:
        """Raise unless the actor may watch this session."""
        async with self.db() as s:
            await self._session_row(s, actor, agent_id, session_id)


__all__ = ["SessionService", "SlackBindingRequest", "spec_of"]
