"""Session rows: creation (race-free per Slack thread), reads, lists, and the turn claim."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, exists, func, or_, select, text, update

from store.db import DbSession, insert_for, newest_first, prepared
from store.ids import new_id
from store.models import AgentSession, SessionInbox, utcnow
from store.queue import PENDING


def conversation_key(team_id: str, channel_id: str, thread_ts: str) -> str:
    return f"{team_id}:{channel_id}:{thread_ts}"


async def create_session(
    db: DbSession,
    *,
    workspace_id: str,
    deployed_agent_id: str,
    source: str,
    title: str = "",
    created_by: str | None = None,
    slack: tuple[str, str, str] | None = None,
) -> AgentSession:
    now = utcnow()
    row = AgentSession(
        id=new_id("sess"),
        workspace_id=workspace_id,
        deployed_agent_id=deployed_agent_id,
        status="idle",
        source=source,
        title=title,
        created_by=created_by,
        last_event_seq=0,
        inbox_seq=0,
        turn_count=0,
        created_at=now,
        updated_at=now,
    )
    if slack is not None:
        team_id, channel_id, thread_ts = slack
        row.slack_team_id, row.slack_channel_id, row.slack_thread_ts = slack
        row.slack_conversation_key = conversation_key(team_id, channel_id, thread_ts)
    db.add(row)
    await db.flush()
    return row


async def get_or_create_slack_session(
    db: DbSession,
    *,
    workspace_id: str,
    deployed_agent_id: str,
    team_id: str,
    channel_id: str,
    thread_ts: str,
    created_by: str | None = None,
    title: str = "",
    source: str = "slack",
    reserve_first_message: bool = False,
) -> tuple[AgentSession, bool]:
    """The one session of this Slack thread for this agent, created on first use.

    Race-free: concurrent first messages of one thread converge on one row (the partial unique
    index decides, `ON CONFLICT DO NOTHING`, then read the winner). With
    `reserve_first_message`, a row created now has inbox position 1 taken for the caller."""
    key = conversation_key(team_id, channel_id, thread_ts)
    now = utcnow()
    values = dict(
        id=new_id("sess"),
        workspace_id=workspace_id,
        deployed_agent_id=deployed_agent_id,
        status="idle",
        source=source,
        title=title,
        created_by=created_by,
        slack_team_id=team_id,
        slack_channel_id=channel_id,
        slack_thread_ts=thread_ts,
        slack_conversation_key=key,
        last_event_seq=0,
        inbox_seq=1 if reserve_first_message else 0,
        turn_count=0,
        created_at=now,
        updated_at=now,
    )
    statement = prepared(
        db,
        "insert_slack_session",
        lambda: (
            insert_for(db, AgentSession)
            .values({name: bindparam(name) for name in values})
            .on_conflict_do_nothing(
                index_elements=["deployed_agent_id", "slack_conversation_key"],
                index_where=text("slack_conversation_key IS NOT NULL"),
            )
            .returning(AgentSession.id)
        ),
    )
    inserted = await db.scalar(statement, values)
    if inserted is not None:  # ours: no need to read back what we just wrote
        return AgentSession(**values), True
    row = await db.scalar(
        select(AgentSession)
        .where(
            AgentSession.deployed_agent_id == deployed_agent_id,
            AgentSession.slack_conversation_key == key,
        )
        .execution_options(populate_existing=True)
    )
    assert row is not None  # inserted by the racer that won
    return row, False


async def find_slack_session(
    db: DbSession, *, team_id: str, channel_id: str, thread_ts: str
) -> AgentSession | None:
    """The session of a Slack thread, whichever agent holds it (for thread replies)."""
    return await db.scalar(
        select(AgentSession)
        .where(
            AgentSession.slack_conversation_key == conversation_key(team_id, channel_id, thread_ts)
        )
        .order_by(AgentSession.created_at)
        .limit(1)
    )


async def attach_slack_thread(
    db: DbSession, session_id: str, *, team_id: str, channel_id: str, thread_ts: str
) -> None:
    """Give a session (started by a schedule, say) the conversation key of the thread it posted."""
    await db.execute(
        update(AgentSession)
        .where(AgentSession.id == session_id)
        .values(
            slack_team_id=team_id,
            slack_channel_id=channel_id,
            slack_thread_ts=thread_ts,
            slack_conversation_key=conversation_key(team_id, channel_id, thread_ts),
            updated_at=utcnow(),
        )
    )


async def set_slack_target(
    db: DbSession, session_id: str, *, team_id: str, channel_id: str
) -> None:
    """A channel to post the session's first answer in (a schedule's); the thread comes later."""
    await db.execute(
        update(AgentSession)
        .where(AgentSession.id == session_id)
        .values(slack_team_id=team_id, slack_channel_id=channel_id, updated_at=utcnow())
    )


async def get_session(
    db: DbSession,
    session_id: str,
    *,
    workspace_id: str | None = None,
    agent_id: str | None = None,
) -> AgentSession | None:
    """The row, or None when missing or outside the given workspace/agent."""
    row = await db.get(AgentSession, session_id, populate_existing=True)
    if row is None:
        return None
    if workspace_id is not None and row.workspace_id != workspace_id:
        return None
    if agent_id is not None and row.deployed_agent_id != agent_id:
        return None
    return row


async def get_session_and_queued(
    db: DbSession, session_id: str, *, workspace_id: str, agent_id: str
) -> tuple[AgentSession, int] | None:
    """The row and its queued count read in one statement (one snapshot: a reader never sees a
    claimed turn as `idle` with nothing queued)."""
    queued = (
        select(func.count())
        .where(SessionInbox.session_id == AgentSession.id, SessionInbox.state == "queued")
        .scalar_subquery()
    )
    found = (
        await db.execute(
            select(AgentSession, queued)
            .where(
                AgentSession.id == session_id,
                AgentSession.workspace_id == workspace_id,
                AgentSession.deployed_agent_id == agent_id,
            )
            .execution_options(populate_existing=True)
        )
    ).first()
    return None if found is None else (found[0], found[1])


async def list_sessions(
    db: DbSession,
    *,
    agent_id: str,
    limit: int,
    status: str | None = None,
    source: str | None = None,
    cursor: tuple[datetime, str] | None = None,
) -> tuple[list[AgentSession], bool]:
    """Newest first, keyset on (created_at, id)."""
    query = select(AgentSession).where(AgentSession.deployed_agent_id == agent_id)
    if status is not None:
        query = query.where(AgentSession.status == status)
    if source is not None:
        query = query.where(AgentSession.source == source)
    rows = list(await db.scalars(newest_first(query, AgentSession, cursor, limit)))
    return rows[:limit], len(rows) > limit


async def set_anthropic_session_id(db: DbSession, session_id: str, anthropic_id: str) -> None:
    await db.execute(
        update(AgentSession)
        .where(AgentSession.id == session_id)
        .values(anthropic_session_id=anthropic_id, updated_at=utcnow())
    )


async def archive_session(db: DbSession, session_id: str) -> bool:
    """Archive; True when it changed now (archiving twice is harmless)."""
    now = utcnow()
    result = await db.execute(
        update(AgentSession)
        .where(AgentSession.id == session_id, AgentSession.status != "archived")
        .values(status="archived", archived_at=now, updated_at=now)
    )
    return bool(result.rowcount)


async def claim_turn(
    db: DbSession, session_id: str, *, runner_id: str, lease_until: datetime
) -> bool:
    """Take the session for one turn: idle (or running with a dead lease) and with a queued
    message. A conditional UPDATE, so only one runner in any process wins."""
    now = utcnow()
    has_queued = exists().where(
        SessionInbox.session_id == AgentSession.id, SessionInbox.state.in_(PENDING)
    )
    result = await db.execute(
        update(AgentSession)
        .where(
            AgentSession.id == session_id,
            or_(
                AgentSession.status == "idle",
                and_(AgentSession.status == "running", AgentSession.lease_expires_at < now),
            ),
            has_queued,
        )
        .values(
            status="running",
            runner_id=runner_id,
            lease_expires_at=lease_until,
            turn_started_at=now,
            turn_count=AgentSession.turn_count + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


async def take_over_running(
    db: DbSession, session_id: str, *, runner_id: str, lease_until: datetime
) -> bool:
    """Adopt a session left `running` by a runner whose lease expired (crash, kill -9)."""
    now = utcnow()
    result = await db.execute(
        update(AgentSession)
        .where(
            AgentSession.id == session_id,
            AgentSession.status == "running",
            or_(AgentSession.lease_expires_at.is_(None), AgentSession.lease_expires_at < now),
        )
        .values(runner_id=runner_id, lease_expires_at=lease_until, updated_at=now)
    )
    return bool(result.rowcount)


async def renew_leases(
    db: DbSession, session_ids: list[str], *, runner_id: str, lease_until: datetime
) -> set[str]:
    """Extend the leases `runner_id` holds on these sessions; returns those it still holds
    (a session another runner took over is not among them; an archived one still is)."""
    result = await db.execute(
        update(AgentSession)
        .where(AgentSession.id.in_(session_ids), AgentSession.runner_id == runner_id)
        .values(lease_expires_at=lease_until)
        .returning(AgentSession.id)
        .execution_options(synchronize_session=False)
    )
    return set(result.scalars())


async def release_turn(db: DbSession, session_id: str, *, runner_id: str) -> bool:
    """End the turn: back to idle (an archived session stays archived)."""
    now = utcnow()
    result = await db.execute(
        update(AgentSession)
        .where(
            AgentSession.id == session_id,
            AgentSession.runner_id == runner_id,
            AgentSession.status == "running",
        )
        .values(status="idle", runner_id=None, lease_expires_at=None, updated_at=now)
    )
    if not result.rowcount:
        await db.execute(
            update(AgentSession)
            .where(AgentSession.id == session_id, AgentSession.runner_id == runner_id)
            .values(runner_id=None, lease_expires_at=None, updated_at=now)
        )
    return bool(result.rowcount)


async def sessions_to_recover(db: DbSession, *, now: datetime, limit: int = 100) -> list[str]:
    """Sessions with work and no live runner: running with an expired lease, or idle with a
    queued message (a kick lost in a crash)."""
    queued = exists().where(
        SessionInbox.session_id == AgentSession.id, SessionInbox.state.in_(PENDING)
    )
    rows = await db.scalars(
        select(AgentSession.id)
        .where(
            or_(
                and_(
                    AgentSession.status == "running",
                    or_(
                        AgentSession.lease_expires_at.is_(None), AgentSession.lease_expires_at < now
                    ),
                ),
                and_(AgentSession.status == "idle", queued),
            )
        )
        .limit(limit)
    )
    return list(rows)


async def queued_counts(db: DbSession, session_ids: list[str]) -> dict[str, int]:
    if not session_ids:
        return {}
    rows = await db.execute(
        select(SessionInbox.session_id, func.count())
        .where(SessionInbox.session_id.in_(session_ids), SessionInbox.state == "queued")
        .group_by(SessionInbox.session_id)
    )
    counts = {sid: 0 for sid in session_ids}
    counts.update({sid: n for sid, n in rows.all()})
    return counts
