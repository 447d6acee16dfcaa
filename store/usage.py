"""Metering: one row per turn (tokens, runtime, cost) and one per priced tool call."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from store.db import DbSession, insert_for
from store.ids import new_id
from store.models import AgentComputeUsage, UsageLog, utcnow


async def record_turn(
    db: DbSession,
    *,
    workspace_id: str,
    session_id: str,
    turn: int,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_input_tokens: int,
    cache_creation_input_tokens: int,
    runtime_seconds: Decimal,
    cost_usd: Decimal,
) -> str | None:
    """The turn's usage row; None when this turn was already recorded (a resumed turn)."""
    return await db.scalar(
        insert_for(db, AgentComputeUsage)
        .values(
            id=new_id("use"),
            workspace_id=workspace_id,
            session_id=session_id,
            turn=turn,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_input_tokens=cache_read_input_tokens,
            cache_creation_input_tokens=cache_creation_input_tokens,
            runtime_seconds=runtime_seconds,
            cost_usd=cost_usd,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["session_id", "turn"])
        .returning(AgentComputeUsage.id)
    )


async def turns_of(db: DbSession, session_id: str) -> list[AgentComputeUsage]:
    rows = await db.scalars(
        select(AgentComputeUsage)
        .where(AgentComputeUsage.session_id == session_id)
        .order_by(AgentComputeUsage.turn)
    )
    return list(rows)


async def record_tool_call(
    db: DbSession,
    *,
    workspace_id: str,
    session_id: str | None,
    tool_use_id: str,
    tool_name: str,
    units: Decimal,
    cost_usd: Decimal,
) -> str | None:
    """One priced tool call; None when this tool_use_id was already recorded."""
    return await db.scalar(
        insert_for(db, UsageLog)
        .values(
            id=new_id("tool"),
            workspace_id=workspace_id,
            session_id=session_id,
            tool_use_id=tool_use_id,
            tool_name=tool_name,
            units=units,
            cost_usd=cost_usd,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["tool_use_id"])
        .returning(UsageLog.id)
    )
