"""Schedules, webhook endpoints and the runs they trigger.

Exactly-once across processes: a schedule's fire is claimed by moving `next_fire_at` with a
conditional UPDATE (only the process that saw the old value wins), and each run row is unique per
(schedule, fire time) and per (webhook endpoint, idempotency key).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update

from store.db import DbSession, insert_for, newest_first
from store.ids import new_id
from store.models import AgentTriggerRun, Schedule, WebhookEndpoint, utcnow


async def create_schedule(
    db: DbSession,
    *,
    workspace_id: str,
    agent_id: str,
    cron: str,
    timezone: str,
    input_text: str,
    enabled: bool,
    next_fire_at: datetime | None,
    slack_team_id: str | None,
    slack_channel_id: str | None,
    created_by: str | None,
) -> Schedule:
    row = Schedule(
        id=new_id("sch"),
        workspace_id=workspace_id,
        deployed_agent_id=agent_id,
        cron=cron,
        timezone=timezone,
        input_text=input_text,
        enabled=enabled,
        next_fire_at=next_fire_at,
        slack_team_id=slack_team_id,
        slack_channel_id=slack_channel_id,
        created_by=created_by,
        created_at=utcnow(),
    )
    db.add(row)
    await db.flush()
    return row


async def list_schedules(db: DbSession, agent_id: str) -> list[Schedule]:
    rows = await db.scalars(
        select(Schedule)
        .where(Schedule.deployed_agent_id == agent_id)
        .order_by(Schedule.created_at, Schedule.id)
    )
    return list(rows)


async def delete_schedule(db: DbSession, agent_id: str, schedule_id: str) -> bool:
    result = await db.execute(
        delete(Schedule).where(Schedule.id == schedule_id, Schedule.deployed_agent_id == agent_id)
    )
    return bool(result.rowcount)


async def due_schedules(db: DbSession, now: datetime, *, limit: int = 100) -> list[Schedule]:
    rows = await db.scalars(
        select(Schedule)
        .where(Schedule.enabled.is_(True), Schedule.next_fire_at <= now)
        .order_by(Schedule.next_fire_at)
        .limit(limit)
    )
    return list(rows)


async def claim_fire(
    db: DbSession,
    schedule_id: str,
    *,
    seen_next: datetime,
    new_next: datetime | None,
    now: datetime,
) -> bool:
    """Move the schedule past this fire; True only for the one process that moved it."""
    result = await db.execute(
        update(Schedule)
        .where(
            Schedule.id == schedule_id,
            Schedule.next_fire_at == seen_next,
            Schedule.enabled.is_(True),
        )
        .values(next_fire_at=new_next, last_fired_at=now)
    )
    return bool(result.rowcount)


async def create_endpoint(
    db: DbSession, *, workspace_id: str, agent_id: str, secret: str, created_by: str | None
) -> WebhookEndpoint:
    row = WebhookEndpoint(
        id=new_id("whk"),
        workspace_id=workspace_id,
        deployed_agent_id=agent_id,
        secret=secret,
        enabled=True,
        created_by=created_by,
        created_at=utcnow(),
    )
    db.add(row)
    await db.flush()
    return row


async def get_endpoint(db: DbSession, endpoint_id: str) -> WebhookEndpoint | None:
    return await db.get(WebhookEndpoint, endpoint_id)


async def start_run(
    db: DbSession,
    *,
    workspace_id: str,
    agent_id: str,
    kind: str,
    schedule_id: str | None = None,
    fire_time: datetime | None = None,
    webhook_endpoint_id: str | None = None,
    idempotency_key: str | None = None,
) -> AgentTriggerRun | None:
    """A new run; None when its (schedule, fire time) or (endpoint, key) was taken before."""
    run_id = new_id("run")
    inserted = await db.scalar(
        insert_for(db, AgentTriggerRun)
        .values(
            id=run_id,
            workspace_id=workspace_id,
            deployed_agent_id=agent_id,
            kind=kind,
            schedule_id=schedule_id,
            fire_time=fire_time,
            webhook_endpoint_id=webhook_endpoint_id,
            idempotency_key=idempotency_key,
            status="started",
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()
        .returning(AgentTriggerRun.id)
    )
    return None if inserted is None else await db.get(AgentTriggerRun, run_id)


async def find_run_by_key(
    db: DbSession, endpoint_id: str, idempotency_key: str
) -> AgentTriggerRun | None:
    return await db.scalar(
        select(AgentTriggerRun).where(
            AgentTriggerRun.webhook_endpoint_id == endpoint_id,
            AgentTriggerRun.idempotency_key == idempotency_key,
        )
    )


async def retire_key(db: DbSession, run_id: str, idempotency_key: str) -> None:
    """Free a body-hash key whose window has passed (the old run keeps a unique variant)."""
    await db.execute(
        update(AgentTriggerRun)
        .where(AgentTriggerRun.id == run_id, AgentTriggerRun.idempotency_key == idempotency_key)
        .values(idempotency_key=f"{idempotency_key}:{run_id}")
    )


async def attach_session(db: DbSession, run_id: str, session_id: str) -> None:
    await db.execute(
        update(AgentTriggerRun).where(AgentTriggerRun.id == run_id).values(session_id=session_id)
    )


async def finish_runs_of_session(
    db: DbSession, session_id: str, *, status: str, error: str | None
) -> None:
    await db.execute(
        update(AgentTriggerRun)
        .where(AgentTriggerRun.session_id == session_id, AgentTriggerRun.status == "started")
        .values(status=status, error=error, finished_at=utcnow())
    )


async def fail_run(db: DbSession, run_id: str, error: str) -> None:
    await db.execute(
        update(AgentTriggerRun)
        .where(AgentTriggerRun.id == run_id)
        .values(status="error", error=error, finished_at=utcnow())
    )


async def list_runs(
    db: DbSession, agent_id: str, *, limit: int, cursor: tuple[datetime, str] | None = None
) -> tuple[list[AgentTriggerRun], bool]:
    query = select(AgentTriggerRun).where(AgentTriggerRun.deployed_agent_id == agent_id)
    rows = list(await db.scalars(newest_first(query, AgentTriggerRun, cursor, limit)))
    return rows[:limit], len(rows) > limit
