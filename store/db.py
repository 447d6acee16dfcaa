"""Engines for SQLite (aiosqlite) and PostgreSQL (asyncpg), and the dialect-aware bits of SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

__all__ = [
    "DbSession",
    "make_engine",
    "make_sessionmaker",
    "is_sqlite",
    "insert_for",
    "is_unavailable",
]


class DatabaseConfigError(Exception):
    """DATABASE_URL names no database this app can use."""


def make_engine(
    url: str, *, pool_size: int = 10, search_path: str | None = None, echo: bool = False
) -> AsyncEngine:
    """Build the engine. SQLite gets WAL and one connection: several writers on one file convoy on
    its lock (p99 over a second), one connection keeps writes in a fair queue."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a long text
        raise DatabaseConfigError(f"DATABASE_URL is not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername != "sqlite+aiosqlite":
            raise DatabaseConfigError("DATABASE_URL for SQLite must start with sqlite+aiosqlite://")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            parsed, pool_size=1, max_overflow=0, pool_timeout=60, echo=echo
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        if parsed.drivername != "postgresql+asyncpg":
            raise DatabaseConfigError(
                "DATABASE_URL for PostgreSQL must start with postgresql+asyncpg://"
            )
        connect_args: dict[str, Any] = {}
        if search_path:
            connect_args["server_settings"] = {"search_path": search_path}
        return create_async_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args=connect_args,
            echo=echo,
        )
    raise DatabaseConfigError(
        f"DATABASE_URL uses {backend!r}; use sqlite+aiosqlite:// or postgresql+asyncpg://"
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[DbSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_sqlite(db: DbSession | AsyncEngine) -> bool:
    bind = db.bind if isinstance(db, DbSession) else db
    return bind.dialect.name == "sqlite"


_PREPARED: dict[tuple[str, str], Any] = {}


def prepared(db: DbSession, name: str, build: Any) -> Any:
    """A statement built once per dialect (with `bindparam`s), for the hot paths: building and
    cache-keying a statement costs SQLAlchemy more than the round trip on a Slack ack."""
    key = (name, db.bind.dialect.name)
    statement = _PREPARED.get(key)
    if statement is None:
        statement = _PREPARED[key] = build()
    return statement


def insert_for(db: DbSession, table: Any) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_nothing`/`do_update`."""
    if is_sqlite(db):
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert(table)


# SQLSTATE classes of a server that cannot serve now: connection exception, insufficient
# resources, operator intervention (shutting down, starting up, connection terminated).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57")


def is_unavailable(exc: BaseException) -> bool:
    """The database could not be reached, dropped the connection, or had no connection to give
    in time: work interrupted by this can be taken up again later (by this process or another),
    unlike a constraint violation or a bad statement, which would fail the same way again."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (OSError, sa_exc.TimeoutError, sa_exc.InterfaceError)):
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.OperationalError) and "database is locked" in str(exc):
        return True  # SQLite: another writer held the file longer than busy_timeout
    if "another operation is in progress" in str(exc):
        return True  # asyncpg: a connection left mid-operation when PostgreSQL went away
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return sqlstate[:2] in _UNAVAILABLE_SQLSTATES


async def ping(engine: AsyncEngine) -> None:
    """One round trip; raises when the database does not answer."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def newest_first(query: Any, model: Any, cursor: tuple[Any, str] | None, limit: int) -> Any:
    """A keyset page, newest first on (created_at, id): rows strictly after `cursor`, and one
    more than `limit` so the caller knows whether there are more."""
    from sqlalchemy import and_, or_

    if cursor is not None:
        created_at, row_id = cursor
        query = query.where(
            or_(
                model.created_at < created_at,
                and_(model.created_at == created_at, model.id < row_id),
            )
        )
    return query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
