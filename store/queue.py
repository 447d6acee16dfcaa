"""The per-session inbox: user messages wait here, in order, until a turn sends them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select, update

from store.db import DbSession, insert_for, prepared
from store.ids import new_id
from store.models import AgentSession, SessionInbox, utcnow

# Messages a turn still owes the runtime: waiting, or handed over without confirmation.
PENDING = ("queued", "sending")


async def enqueue(
    db: DbSession,
    session_id: str,
    *,
    text: str,
    content: list[Any] | None = None,
    author: str | None = None,
    dedupe_key: str | None = None,
    slack_ts: str | None = None,
    position: int | None = None,
) -> SessionInbox | None:
    """Append a message; None when `dedupe_key` was already taken (the same message again).

    `position` is for a session created in this transaction with its first position reserved
    (`inbox_seq=1`): it saves the counter's round trip on the Slack ack path."""
    if position is None:
        position = await db.scalar(
            update(AgentSession)
            .where(AgentSession.id == session_id)
            .values(inbox_seq=AgentSession.inbox_seq + 1)
            .returning(AgentSession.inbox_seq)
        )
    if position is None:
        raise LookupError(f"no session {session_id}")
    message_id = new_id("msg")
    values = {
        "id": message_id,
        "session_id": session_id,
        "position": position,
        "state": "queued",
        "text": text,
        "content": content or [],
        "author": author,
        "dedupe_key": dedupe_key,
        "slack_ts": slack_ts,
        "created_at": utcnow(),
    }
    # ON CONFLICT on the dedupe key only: a NULL key never conflicts, so one statement serves.
    statement = prepared(
        db,
        "enqueue",
        lambda: (
            insert_for(db, SessionInbox)
            .values({name: bindparam(name) for name in values})
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(SessionInbox.id)
        ),
    )
    inserted = await db.scalar(statement, values)
    if inserted is None:
        return None
    return SessionInbox(
        id=message_id,
        session_id=session_id,
        position=position,
        state="queued",
        text=text,
        content=content or [],
        author=author,
        dedupe_key=dedupe_key,
        slack_ts=slack_ts,
    )


async def next_queued(db: DbSession, session_id: str) -> SessionInbox | None:
    return await db.scalar(
        select(SessionInbox)
        .where(SessionInbox.session_id == session_id, SessionInbox.state.in_(PENDING))
        .order_by(SessionInbox.position)
        .limit(1)
    )


async def mark_sending(db: DbSession, message_id: str, session_id: str) -> None:
    """Before sending: note where the mirror stood, so a runner taking over after a crash looks
    for this message only among the runtime's later events."""
    last_seq = select(AgentSession.last_event_seq).where(AgentSession.id == session_id)
    await db.execute(
        update(SessionInbox)
        .where(SessionInbox.id == message_id)
        .values(state="sending", mirror_seq_at_send=last_seq.scalar_subquery())
    )


async def mark_sent(db: DbSession, message_id: str) -> None:
    await db.execute(
        update(SessionInbox)
        .where(SessionInbox.id == message_id, SessionInbox.state.in_(PENDING))
        .values(state="sent", sent_at=utcnow())
    )


async def mark_failed(db: DbSession, message_id: str) -> None:
    await db.execute(
        update(SessionInbox)
        .where(SessionInbox.id == message_id, SessionInbox.state.in_(PENDING))
        .values(state="failed")
    )


async def get_message(db: DbSession, message_id: str) -> SessionInbox | None:
    return await db.get(SessionInbox, message_id)


async def list_queued(db: DbSession, session_id: str) -> list[SessionInbox]:
    rows = await db.scalars(
        select(SessionInbox)
        .where(SessionInbox.session_id == session_id, SessionInbox.state == "queued")
        .order_by(SessionInbox.position)
    )
    return list(rows)
