"""full-text search over the event mirror

SQLite: an FTS5 table `session_events_fts` kept in step by triggers on `session_events`.
PostgreSQL: a side table `session_event_search` (event -> agent, tsvector) with a GIN index,
filled by a trigger. Events mirrored before this revision are indexed on upgrade.

The DDL is `store.search.install` (the test fixture builds schemas with `create_all` and runs the
same function). Note for later SQLite migrations: a batch "move and copy" of `session_events`
drops its triggers; run `store.search.uninstall` and `install` around such a change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 10:00:00
"""

from collections.abc import Sequence

from alembic import op

from store import search

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    search.install(op.get_bind())


def downgrade() -> None:
    search.uninstall(op.get_bind())
