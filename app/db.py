"""Declarative base, the types every table shares, and the SQLAlchemy engine.

The engine runs SQLite (the embedded default), migrations and tests; the service reaches any
database only through ``app.uow``, which runs PostgreSQL on asyncpg.
"""

from __future__ import annotations

import datetime as dt
import weakref
from typing import Any, TypeAlias

import asyncpg
from sqlalchemy import BigInteger, DateTime, Integer, MetaData, TypeDecorator, event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MAX_BIGINT = 2**63 - 1

# A string: asyncpg's classes are generic only to type checkers.
PgPool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

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

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        # asyncpg returns timestamptz as aware UTC already: no call per value on the reads.
        if dialect.driver == "asyncpg":
            return None
        return super().result_processor(dialect, coltype)


# What a lost or refused database connection looks like, through SQLAlchemy or asyncpg
# directly: callers answer "unavailable, retry" (503), never a bare 500. A server with no room
# for another client (53300, "too many clients already") refuses the connection too.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    SAInterfaceError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
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
