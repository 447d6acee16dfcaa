"""`escalate_to_human`: the agent asks for a person. The inbox lists them; a member resolves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from router import cursors
from router.errors import NotFound
from router.types import Page
from store import escalations as escalations_store


@dataclass(frozen=True, slots=True)
class EscalationView:
    id: str
    session_id: str
    reason: str
    status: str
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None


def escalation_view(row: Any) -> EscalationView:
    return EscalationView(
        row.id,
        row.session_id,
        row.reason,
        row.status,
        row.created_at,
        row.resolved_at,
        row.resolved_by,
    )


async def open_from_tool(
    db: Any, *, workspace_id: str, session_id: str, tool_use_id: str, use: dict[str, Any]
) -> EscalationView | None:
    """None when this tool call was already recorded (a resumed turn)."""
    tool_input = use.get("input") if isinstance(use.get("input"), dict) else {}
    reason = str(tool_input.get("reason") or "The agent asked for a human.")[:4000]
    async with db.begin() as s:
        row = await escalations_store.open_escalation(
            s,
            workspace_id=workspace_id,
            session_id=session_id,
            tool_use_id=tool_use_id,
            reason=reason,
        )
    return None if row is None else escalation_view(row)


async def list_escalations(
    db: Any, workspace_id: str, *, limit: int, cursor: str | None, status: str | None = None
) -> Page:
    after = cursors.decode(cursor) if cursor else None
    async with db() as s:
        rows, more = await escalations_store.list_escalations(
            s, workspace_id, limit=limit, status=status, cursor=after
        )
    next_cursor = cursors.next_of(rows, more)
    return Page([escalation_view(r) for r in rows], more, next_cursor)


async def resolve(db: Any, workspace_id: str, escalation_id: str, *, by: str) -> EscalationView:
    """Resolving twice answers the same resolved escalation."""
    async with db.begin() as s:
        if await escalations_store.get(s, escalation_id, workspace_id=workspace_id) is None:
            raise NotFound(f"no escalation {escalation_id}")
        await escalations_store.resolve(s, escalation_id, workspace_id=workspace_id, resolved_by=by)
        row = await escalations_store.get(s, escalation_id, workspace_id=workspace_id)
    return escalation_view(row)
