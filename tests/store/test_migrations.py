"""The Alembic migration builds exactly the models' schema, plus Slack's OAuth tables."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import MetaData

from store import search
from store.migrate import downgrade, upgrade
from store.models import Base


def _slack_metadata() -> MetaData:
    metadata = MetaData()
    SQLAlchemyInstallationStore.build_installations_table(metadata, "slack_installations")
    SQLAlchemyInstallationStore.build_bots_table(metadata, "slack_bots")
    SQLAlchemyOAuthStateStore.build_oauth_states_table(metadata, "slack_oauth_states")
    return metadata


def _not_search_index(obj, name, type_, reflected, compare_to) -> bool:
    """The full-text index (migration 0002) is raw DDL outside the models."""
    return not (type_ == "table" and name in search.SEARCH_OBJECTS)


async def test_migration_matches_the_models_and_slack_tables(empty_database):
    await upgrade(empty_database.engine)

    def diff(sync_conn):
        context = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "include_object": _not_search_index}
        )
        return compare_metadata(context, [Base.metadata, _slack_metadata()])

    async with empty_database.engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == []


async def test_migration_downgrades_to_nothing_and_up_again(empty_database):
    await upgrade(empty_database.engine)
    await downgrade(empty_database.engine, "base")
    await upgrade(empty_database.engine)

    def tables(sync_conn):
        from sqlalchemy import inspect

        return set(inspect(sync_conn).get_table_names())

    async with empty_database.engine.connect() as conn:
        names = await conn.run_sync(tables)
    assert {"agent_sessions", "session_events", "slack_installations", "wallet_ledger"} <= names
