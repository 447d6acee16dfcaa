"""Tool calls that need a human: ask (in Slack and the dashboard), then decide once.

A decision is taken in the database first (only one wins, whichever replica or button), then
sent to the runtime as `user.tool_confirmation`; if the runtime cannot be told, the decision is
given back so someone can decide again. The runner still holding the turn sees the runtime go on
through its stream, wherever the decision was taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from router.errors import Conflict, NotFound, RuntimeFailure, SessionNotFound
from store import approvals as approvals_store
from store import sessions as sessions_store


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    tool_use_id: str
    decision: str
    reason: str | None
    decided_by: str
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    id: str
    workspace_id: str
    session_id: str
    tool_use_id: str
    tool_name: str
    tool_input: dict[str, Any]


async def request_approval(
    db: Any, *, workspace_id: str, session_id: str, tool_use_id: str, use: dict[str, Any]
) -> ApprovalRequest | None:
    """Record the waiting call; None when it was already recorded (a resumed turn)."""
    name = str(use.get("name") or "tool")
    tool_input = use.get("input") if isinstance(use.get("input"), dict) else {}
    async with db.begin() as s:
        created = await approvals_store.request(
            s,
            workspace_id=workspace_id,
            session_id=session_id,
            tool_use_id=tool_use_id,
            tool_name=name,
            tool_input=tool_input,
        )
        row = await approvals_store.get(s, session_id, tool_use_id)
    if not created:
        return None
    return ApprovalRequest(row.id, workspace_id, session_id, tool_use_id, name, tool_input)


async def decide(
    db: Any,
    runtime: Any,
    *,
    workspace_id: str | None,
    session_id: str,
    tool_use_id: str,
    allow: bool,
    reason: str | None,
    decided_by: str,
    agent_id: str | None = None,
) -> ApprovalDecision:
    decision = "allow" if allow else "deny"
    async with db.begin() as s:
        session = await sessions_store.get_session(
            s, session_id, workspace_id=workspace_id, agent_id=agent_id
        )
        if session is None:
            raise SessionNotFound(f"no session {session_id}")
        if await approvals_store.get(s, session_id, tool_use_id) is None:
            raise NotFound(f"no tool call {tool_use_id} waits for approval in this session")
        if not await approvals_store.decide(
            s,
            session_id=session_id,
            tool_use_id=tool_use_id,
            decision=decision,
            reason=reason,
            decided_by=decided_by,
        ):
            raise Conflict(f"tool call {tool_use_id} was already decided")
    event: dict[str, Any] = {
        "type": "user.tool_confirmation",
        "tool_use_id": tool_use_id,
        "result": decision,
    }
    if not allow and reason:
        event["deny_message"] = reason
    try:
        await runtime.send_events(session.anthropic_session_id, [event])
    except RuntimeFailure:
        async with db.begin() as s:
            await approvals_store.undo(s, session_id=session_id, tool_use_id=tool_use_id)
        raise
    async with db() as s:
        row = await approvals_store.get(s, session_id, tool_use_id)
    return ApprovalDecision(tool_use_id, decision, reason, decided_by, row.decided_at)


async def find_request(db: Any, approval_id: str) -> ApprovalRequest | None:
    """An approval by its own id (what a Slack card's button carries)."""
    async with db() as s:
        row = await approvals_store.get_by_id(s, approval_id)
    if row is None:
        return None
    return ApprovalRequest(
        row.id, row.workspace_id, row.session_id, row.tool_use_id, row.tool_name, row.tool_input
    )
