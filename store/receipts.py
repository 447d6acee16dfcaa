"""Slack event receipts: the first delivery of an event_id wins, retries are dropped."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete

from store.db import DbSession, insert_for, prepared
from store.models import SlackEventReceipt, utcnow


async def record_slack_event(db: DbSession, event_id: str, team_id: str | None = None) -> bool:
    """True when this event_id is new; False for a retry of one already taken."""
    statement = prepared(
        db,
        "record_slack_event",
        lambda: (
            insert_for(db, SlackEventReceipt)
            .values(
                event_id=bindparam("event_id"),
                team_id=bindparam("team_id"),
                received_at=bindparam("received_at"),
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(SlackEventReceipt.event_id)
        ),
    )
    inserted = await db.scalar(
        statement, {"event_id": event_id, "team_id": team_id, "received_at": utcnow()}
    )
    return inserted is not None


async def prune_slack_receipts(db: DbSession, older_than: datetime) -> int:
    """Slack retries for at most about 5 minutes; receipts older than a day are dead weight."""
    result = await db.execute(
        delete(SlackEventReceipt).where(SlackEventReceipt.received_at < older_than)
    )
    return result.rowcount or 0
