"""Database engine, declarative base and the types every table shares.

The engine is built in the lifespan (never at import time) and reaches code through
dependencies. SQLite is the embedded default; PostgreSQL through asyncpg for production.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy import BigInteger, DateTime, Integer, MetaData, TypeDecorator, event
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MAX_BIGINT = 2**63 - 1

# Strings: asyncpg's classes are generic only to type checkers.
PgPool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
PgConnection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Repo = TypeVar("Repo")

# SQLite only auto-increments INTEGER PRIMARY KEY, so big ids are BIGINT elsewhere only.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in Python on every backend (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use timezone-aware UTC")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# What a lost or refused database connection looks like, through SQLAlchemy or asyncpg
# directly: callers answer "unavailable, retry" (503), never a bare 500.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    SAInterfaceError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers run beside the single writer; busy_timeout queues writers instead of
    # failing them at once with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` with per-backend settings."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    # No pre-ping: it costs a round trip on every checkout (~0.8 ms of CPU per notify here).
    # After a database restart, the first statement on a dead connection fails, SQLAlchemy
    # invalidates the pool, and that one request is answered 503 (WeChat retries a notify).
    kwargs.setdefault("pool_recycle", 1800)
    return create_async_engine(url, **kwargs)


_autocommit_engines: weakref.WeakKeyDictionary[Engine, AsyncEngine] = weakref.WeakKeyDictionary()


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, for single statements: each is its own transaction, so the driver sends
    no BEGIN/COMMIT around it (two round trips saved per statement).

    Built once per engine: making the option engine costs more than the statement it runs.
    """
    found = _autocommit_engines.get(engine.sync_engine)
    if found is None:
        found = engine.execution_options(isolation_level="AUTOCOMMIT")
        _autocommit_engines[engine.sync_engine] = found
    return found


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def open_pg_pool(engine: AsyncEngine, url: str) -> PgPool | None:
    """An asyncpg pool beside the engine on PostgreSQL, for the hot paths; None elsewhere.

    Measured here, a statement through SQLAlchemy's async layer costs about twice the client CPU
    of the same SQL on asyncpg (docs/benchmarks.md), so notify and create-order use this.
    """
    if engine.dialect.name != "postgresql":
        return None
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    # min_size=0: start-up does not need the database; connections open on first use.
    return await asyncpg.create_pool(dsn, min_size=0, max_size=10)


def single_statements(
    engine: AsyncEngine,
    pool: PgPool | None,
    *,
    core: Callable[[AsyncConnection], Repo],
    pg: Callable[[PgConnection], Repo],
) -> Callable[[], AbstractAsyncContextManager[Repo]]:
    """A repository on a connection outside any transaction, so each statement commits alone
    (no BEGIN/COMMIT round trips): asyncpg directly when ``pool`` is given, else the engine."""
    if pool is not None:
        return _pooled(pool, pg)
    auto = autocommit(engine)

    @asynccontextmanager
    async def on_engine() -> AsyncIterator[Repo]:
        async with auto.connect() as conn:
            yield core(conn)

    return on_engine


def _pooled(
    pool: PgPool, pg: Callable[[PgConnection], Repo]
) -> Callable[[], AbstractAsyncContextManager[Repo]]:
    @asynccontextmanager
    async def on_pool() -> AsyncIterator[Repo]:
        async with pool.acquire() as conn:
            yield pg(conn)

    return on_pool
