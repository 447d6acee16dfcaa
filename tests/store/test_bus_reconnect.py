"""The cross-process live bus keeps working after PostgreSQL drops its connection."""

from __future__ import annotations

import uuid

import pytest

from router.types import EventRecord
from store.bus import PgLiveBus
from store.models import utcnow
from tests.conftest import TEST_POSTGRES_URL, TestDatabase


def _record(session_id: str, seq: int) -> EventRecord:
    return EventRecord(seq, f"sevt_{seq}", "agent.message", utcnow(), {}, session_id)


async def test_a_connection_closed_without_notice_is_reopened(database: TestDatabase) -> None:
    if database.kind != "postgres":
        pytest.skip("the cross-process bus is PostgreSQL's")

    async def load(session_id: str, after: int | None, up_to: int | None) -> list[EventRecord]:
        return [_record(session_id, seq) for seq in range((after or 0) + 1, (up_to or 0) + 1)]

    dsn = TEST_POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    channel = f"bus_{uuid.uuid4().hex[:12]}"
    sender = PgLiveBus(dsn, load, channel=channel, reconnect_delay=0.05)
    watcher = PgLiveBus(dsn, load, channel=channel, reconnect_delay=0.05)
    await sender.start()
    await watcher.start()
    try:
        sub = watcher.subscribe("sess_1")
        # What asyncpg does to a connection whose operation failed while PostgreSQL shut down:
        # closed, and no termination listener is told.
        sender._conn._abort()
        sender.publish("sess_1", [_record("sess_1", 1)])
        got = await sub.get(timeout=10)
        assert isinstance(got, EventRecord) and got.seq == 1
    finally:
        await sender.close()
        await watcher.close()
