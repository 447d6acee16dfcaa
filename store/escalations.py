"""Escalations to a human: opened by the agent's `escalate_to_human` call, resolved by a member."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from store.db import DbSession, insert_for, newest_first
from store.ids import new_id
from store.models import AgentEscalation, utcnow


async def open_escalation(
    db: DbSession, *, workspace_id: str, session_id: str, tool_use_id: str, reason: str
) -> AgentEscalation | None:
    """Open one per tool call; None when this call was already recorded (a resumed turn)."""
    inserted = await db.scalar(
        insert_for(db, AgentEscalation)
        .values(
            id=new_id("esc"),
            workspace_id=workspace_id,
            session_id=session_id,
            tool_use_id=tool_use_id,
            reason=reason,
            status="open",
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["tool_use_id"])
        .returning(AgentEscalation.id)
    )
    return None if inserted is None else await db.get(AgentEscalation, inserted)


async def get(db: DbSession, escalation_id: str, *, workspace_id: str) -> AgentEscalation | None:
    row = await db.get(AgentEscalation, escalation_id, populate_existing=True)
    return row if row is not None and row.workspace_id == workspace_id else None


async def resolve(
    db: DbSession, escalation_id: str, *, workspace_id: str, resolved_by: str
) -> bool:
    """Resolve an open escalation; False when it is not open (resolving twice is harmless)."""
    result = await db.execute(
        update(AgentEscalation)
        .where(
            AgentEscalation.id == escalation_id,
            AgentEscalation.workspace_id == workspace_id,
            AgentEscalation.status == "open",
        )
        .values(status="resolved", resolved_at=utcnow(), resolved_by=resolved_by)
    )
    return bool(result.rowcount)


async def list_escalations(
    db: DbSession,
    workspace_id: str,
    *,
    limit: int,
    status: str | None = None,
    cursor: tuple[datetime, str] | None = None,
) -> tuple[list[AgentEscalation], bool]:
    """Newest first, keyset on (created_at, id)."""
    query = select(AgentEscalation).where(AgentEscalation.workspace_id == workspace_id)
    if status is not None:
        query = query.where(AgentEscalation.status == status)
    rows = list(await db.scalars(newest_first(query, AgentEscalation, cursor, limit)))
    return rows[:limit], len(rows) > limit
