"""The event mirror: append (idempotent on the runtime event id, gapless seq) and keyset pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from store.db import DbSession
from store.models import AgentSession, SessionEvent, utcnow


@dataclass(frozen=True, slots=True)
class NewEvent:
    runtime_event_id: str
    type: str
    data: dict[str, Any]
    created_at: datetime | None = None


class NotTheRunner(Exception):
    """Another runner holds the session now: a runner whose lease ran out must not write."""


async def append_events(
    db: DbSession, session_id: str, events: list[NewEvent], *, runner_id: str | None = None
) -> list[SessionEvent]:
    """Mirror events in order; returns only those not mirrored before, with their new seq.

    The session row is locked (PostgreSQL `FOR UPDATE`; SQLite has one writer) while seq is
    assigned, so concurrent appenders never produce a gap or a duplicate seq. With `runner_id`,
    raises `NotTheRunner` unless that runner holds the session (a fence for stale runners)."""
    if not events:
        return []
    row = (
        await db.execute(
            select(AgentSession.last_event_seq, AgentSession.runner_id)
            .where(AgentSession.id == session_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise LookupError(f"no session {session_id}")
    last, holder = row
    if runner_id is not None and holder != runner_id:
        raise NotTheRunner(session_id)
    ids = list({e.runtime_event_id for e in events})
    known = set(
        await db.scalars(
            select(SessionEvent.runtime_event_id).where(
                SessionEvent.session_id == session_id, SessionEvent.runtime_event_id.in_(ids)
            )
        )
    )
    fresh: list[SessionEvent] = []
    now = utcnow()
    for event in events:
        if event.runtime_event_id in known:
            continue
        known.add(event.runtime_event_id)
        last += 1
        fresh.append(
            SessionEvent(
                session_id=session_id,
                seq=last,
                runtime_event_id=event.runtime_event_id,
                type=event.type,
                data=event.data,
                created_at=event.created_at or now,
            )
        )
    if not fresh:
        return []
    # Core executemany, not the ORM unit of work: this is the hot path of every turn.
    await db.execute(
        insert(SessionEvent),
        [
            {
                "session_id": e.session_id,
                "seq": e.seq,
                "runtime_event_id": e.runtime_event_id,
                "type": e.type,
                "data": e.data,
                "created_at": e.created_at,
            }
            for e in fresh
        ],
    )
    await db.execute(
        update(AgentSession).where(AgentSession.id == session_id).values(last_event_seq=last)
    )
    return fresh


async def list_events(
    db: DbSession,
    session_id: str,
    *,
    limit: int = 50,
    after: int | None = None,
    before: int | None = None,
    descending: bool = False,
) -> tuple[list[SessionEvent], bool]:
    """A keyset page by seq; the bool says whether more lie beyond it in that direction."""
    query = select(SessionEvent).where(SessionEvent.session_id == session_id)
    if after is not None:
        query = query.where(SessionEvent.seq > after)
    if before is not None:
        query = query.where(SessionEvent.seq < before)
    order = SessionEvent.seq.desc() if descending else SessionEvent.seq.asc()
    rows = list(await db.scalars(query.order_by(order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


async def has_runtime_event(db: DbSession, session_id: str, runtime_event_id: str) -> bool:
    found = await db.scalar(
        select(SessionEvent.id).where(
            SessionEvent.session_id == session_id,
            SessionEvent.runtime_event_id == runtime_event_id,
        )
    )
    return found is not None


async def last_runtime_event(db: DbSession, session_id: str) -> SessionEvent | None:
    """The newest mirrored event that came from the runtime (not an `app.` one)."""
    return await db.scalar(
        select(SessionEvent)
        .where(SessionEvent.session_id == session_id, ~SessionEvent.type.startswith("app."))
        .order_by(SessionEvent.seq.desc())
        .limit(1)
    )


async def runtime_time_at(db: DbSession, session_id: str, seq: int) -> datetime | None:
    """When the runtime processed the last runtime event mirrored at or before `seq`."""
    return await db.scalar(
        select(SessionEvent.created_at)
        .where(
            SessionEvent.session_id == session_id,
            SessionEvent.seq <= seq,
            ~SessionEvent.type.startswith("app."),
        )
        .order_by(SessionEvent.seq.desc())
        .limit(1)
    )
