"""Apply the Alembic migrations (programmatic: no alembic.ini to keep in step)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database behind `engine` (its search_path, on PostgreSQL) to `revision`."""

    def run(sync_conn: object) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    def run(sync_conn: object) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.downgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


def stamp_head(sync_conn: object) -> None:
    """Mark a schema built by `metadata.create_all` (tests) as migrated to head."""
    config = alembic_config()
    config.attributes["connection"] = sync_conn
    command.stamp(config, "head")
