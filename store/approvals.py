"""Tool calls waiting for a human's decision. A decision is taken once (conditional UPDATE)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from store.db import DbSession, insert_for
from store.ids import new_id
from store.models import ToolApproval, utcnow


async def request(
    db: DbSession,
    *,
    workspace_id: str,
    session_id: str,
    tool_use_id: str,
    tool_name: str,
    tool_input: dict[str, Any],
) -> bool:
    """Record a waiting tool call; False when it was recorded before (a resumed turn)."""
    inserted = await db.scalar(
        insert_for(db, ToolApproval)
        .values(
            id=new_id("apr"),
            workspace_id=workspace_id,
            session_id=session_id,
            tool_use_id=tool_use_id,
            tool_name=tool_name,
            tool_input=tool_input,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["session_id", "tool_use_id"])
        .returning(ToolApproval.id)
    )
    return inserted is not None


async def get(db: DbSession, session_id: str, tool_use_id: str) -> ToolApproval | None:
    return await db.scalar(
        select(ToolApproval)
        .where(ToolApproval.session_id == session_id, ToolApproval.tool_use_id == tool_use_id)
        .execution_options(populate_existing=True)
    )


async def get_by_id(db: DbSession, approval_id: str) -> ToolApproval | None:
    return await db.get(ToolApproval, approval_id, populate_existing=True)


async def decide(
    db: DbSession,
    *,
    session_id: str,
    tool_use_id: str,
    decision: str,
    reason: str | None,
    decided_by: str,
) -> bool:
    """Take the decision; False when one was already taken (a second click, another replica)."""
    result = await db.execute(
        update(ToolApproval)
        .where(
            ToolApproval.session_id == session_id,
            ToolApproval.tool_use_id == tool_use_id,
            ToolApproval.decision.is_(None),
        )
        .values(decision=decision, reason=reason, decided_by=decided_by, decided_at=utcnow())
    )
    return bool(result.rowcount)


async def undo(db: DbSession, *, session_id: str, tool_use_id: str) -> None:
    """Give the decision back (the runtime could not be told)."""
    await db.execute(
        update(ToolApproval)
        .where(ToolApproval.session_id == session_id, ToolApproval.tool_use_id == tool_use_id)
        .values(decision=None, reason=None, decided_by=None, decided_at=None)
    )


async def set_slack_message(db: DbSession, approval_id: str, channel_id: str, ts: str) -> None:
    await db.execute(
        update(ToolApproval)
        .where(ToolApproval.id == approval_id)
        .values(slack_channel_id=channel_id, slack_message_ts=ts)
    )


async def pending(db: DbSession, session_id: str) -> list[ToolApproval]:
    rows = await db.scalars(
        select(ToolApproval)
        .where(ToolApproval.session_id == session_id, ToolApproval.decision.is_(None))
        .order_by(ToolApproval.created_at)
    )
    return list(rows)
