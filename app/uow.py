"""The one way to the database: a unit of work hands services their repositories.

```python
async with db.transaction() as tx:      # several statements that commit together
    paid = await tx.orders.mark_paid(...)
    await tx.audit.record(row)
async with db.statement() as tx:        # one statement on its own: no BEGIN/COMMIT round trips
    order = await tx.orders.by_out_trade_no(no)
```

Services never see an engine, a pool or a driver; this module is the only code that knows which
one runs underneath (asyncpg on PostgreSQL, SQLAlchemy on SQLite) and holds the one pool of the
process.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import cached_property
from typing import Protocol

import asyncpg
from asyncpg.transaction import Transaction
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth import repository as auth_statements
from app.auth.repository import AuthRepository
from app.db import PgPool, autocommit, create_engine
from app.events import repository as event_statements
from app.events.repository import EventRepository, WebhookRepository
from app.orders import repository as order_statements
from app.orders.repository import OrderRepository
from app.payments import repository as audit_statements
from app.payments.repository import NotifyAuditRepository
from app.products import repository as product_statements
from app.products.repository import ProductRepository
from app.ratelimits import repository as limit_statements
from app.ratelimits.repository import RateLimitRepository
from app.refunds import repository as refund_statements
from app.refunds.repository import RefundRepository
from app.sql import AsyncpgExecutor, Executor, PgConnection, SqlAlchemyExecutor, StatementCache

_SCHEMA_VERSION = text("SELECT version_num FROM alembic_version")
_PING = text("SELECT 1")
# Where the statements live: compiled for asyncpg when the pool is made, not on a request.
STATEMENT_MODULES = (
    auth_statements, event_statements, order_statements, audit_statements,
    product_statements, limit_statements, refund_statements,
)  # fmt: skip


class UnitOfWork:
    """The repositories, all on one connection (and one transaction, if one is open)."""

    def __init__(self, sql: Executor, *, fold_writes: bool) -> None:
        self.sql = sql
        self._fold_writes = fold_writes

    @cached_property
    def orders(self) -> OrderRepository:
        return OrderRepository(self.sql, fold_writes=self._fold_writes)

    @cached_property
    def refunds(self) -> RefundRepository:
        return RefundRepository(self.sql)

    @cached_property
    def events(self) -> EventRepository:
        return EventRepository(self.sql)

    @cached_property
    def webhooks(self) -> WebhookRepository:
        return WebhookRepository(self.sql)

    @cached_property
    def audit(self) -> NotifyAuditRepository:
        return NotifyAuditRepository(self.sql)

    @cached_property
    def auth(self) -> AuthRepository:
        return AuthRepository(self.sql)

    @cached_property
    def products(self) -> ProductRepository:
        return ProductRepository(self.sql)

    @cached_property
    def limits(self) -> RateLimitRepository:
        return RateLimitRepository(self.sql)

    async def ping(self) -> None:
        """One round trip: raises if the database does not answer."""
        await self.sql.scalar(_PING)

    async def schema_version(self) -> str | None:
        """The alembic revision the database is at."""
        version: str | None = await self.sql.scalar(_SCHEMA_VERSION)
        return version


class Subscription(Protocol):
    """A connection of its own that hears one channel (PostgreSQL's LISTEN)."""

    async def ping(self) -> None:
        """One round trip: raises if the connection no longer answers."""

    async def notify(self, payload: str) -> None:
        """Send ``payload`` on the channel (every listener hears it, this one too)."""

    async def close(self) -> None: ...


class Database(ABC):
    """Units of work on this process's one pool."""

    dialect: str  # "postgresql", "sqlite"
    # Whether writes that belong together may be folded into one statement (PostgreSQL's
    # data-modifying CTEs); the orders repository makes the choice from it.
    fold_writes: bool

    async def subscribe(
        self, channel: str, on_message: Callable[[str], None], *, on_lost: Callable[[], None]
    ) -> Subscription | None:
        """Hear ``channel``: ``on_message(payload)`` for each notification, in commit order,
        and ``on_lost()`` if the connection drops. None where the database has no
        notifications (SQLite)."""
        return None

    @abstractmethod
    def statement(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """For one statement: it commits on its own (autocommit), saving BEGIN and COMMIT."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """For statements that must commit together; rolled back if the block raises."""

    @abstractmethod
    async def close(self) -> None: ...


class PgDatabase(Database):
    """PostgreSQL through asyncpg, with every statement compiled once."""

    dialect = "postgresql"

    def __init__(self, pool: PgPool, dsn: str, *, fold_writes: bool = True) -> None:
        self._pool, self._dsn = pool, dsn
        self._cache = StatementCache()
        self._cache.warm(STATEMENT_MODULES)
        self.fold_writes = fold_writes  # False: PostgreSQL taking SQLite's way (tests)

    def statement(self) -> AbstractAsyncContextManager[UnitOfWork]:
        return _Pooled(self._pool, self._cache, transaction=False, fold=self.fold_writes)

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        return _Pooled(self._pool, self._cache, transaction=True, fold=self.fold_writes)

    async def close(self) -> None:
        await self._pool.close()

    async def subscribe(
        self, channel: str, on_message: Callable[[str], None], *, on_lost: Callable[[], None]
    ) -> Subscription | None:
        # Outside the pool: a pooled connection is shared, and LISTEN is per connection.
        # Named, so an operator sees in pg_stat_activity what the extra connection is for.
        settings = {"application_name": f"wxpay listen {channel}"}
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
            self._dsn, server_settings=settings
        )
        return await _PgSubscription.start(conn, channel, on_message, on_lost)


class _PgSubscription:
    def __init__(self, conn: asyncpg.Connection[asyncpg.Record], channel: str) -> None:
        self._conn, self._channel = conn, channel
        # One query at a time on a connection: a heartbeat and a notify may overlap.
        self._turn = asyncio.Lock()

    @classmethod
    async def start(
        cls,
        conn: asyncpg.Connection[asyncpg.Record],
        channel: str,
        on_message: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> _PgSubscription:
        try:
            conn.add_termination_listener(lambda _conn: on_lost())
            await conn.add_listener(channel, lambda _c, _pid, _ch, payload: on_message(payload))
        except BaseException:
            conn.terminate()
            raise
        return cls(conn, channel)

    async def ping(self) -> None:
        async with self._turn:
            await self._conn.fetchval("SELECT 1")

    async def notify(self, payload: str) -> None:
        async with self._turn:
            await self._conn.execute("SELECT pg_notify($1, $2)", self._channel, payload)

    async def close(self) -> None:
        self._conn.terminate()  # no goodbye round trip: it may be the one that hangs


class _Pooled:
    """A pooled connection for one unit of work. A class rather than a generator-based
    context manager: every request on PostgreSQL enters one, and this is the cheaper kind."""

    __slots__ = ("_cache", "_conn", "_fold", "_pool", "_transaction", "_xact")

    def __init__(
        self, pool: PgPool, cache: StatementCache, *, transaction: bool, fold: bool
    ) -> None:
        self._pool, self._cache, self._transaction, self._fold = pool, cache, transaction, fold
        self._conn: PgConnection | None = None
        self._xact: Transaction | None = None

    async def __aenter__(self) -> UnitOfWork:
        conn = self._conn = await self._pool.acquire()
        try:
            if self._transaction:
                self._xact = conn.transaction()
                await self._xact.start()
        except BaseException:
            await self._pool.release(conn)
            raise
        return UnitOfWork(AsyncpgExecutor(conn, self._cache), fold_writes=self._fold)

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        assert self._conn is not None
        try:
            if self._xact is not None:
                await (self._xact.commit() if kind is None else self._xact.rollback())
        finally:
            await self._pool.release(self._conn)


class SqlAlchemyDatabase(Database):
    """Any SQLAlchemy engine: SQLite, the embedded default."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.dialect = engine.dialect.name
        self._autocommit = autocommit(engine)
        # SQLAlchemy on PostgreSQL (the drivers' contract test) folds as asyncpg does.
        self.fold_writes = self.dialect == "postgresql"

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[UnitOfWork]:
        async with self._autocommit.connect() as conn:
            yield UnitOfWork(SqlAlchemyExecutor(conn), fold_writes=self.fold_writes)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        async with self._engine.begin() as conn:
            yield UnitOfWork(SqlAlchemyExecutor(conn), fold_writes=self.fold_writes)

    async def close(self) -> None:
        await self._engine.dispose()


async def open_database(url: str, *, pool_size: int = 10) -> Database:
    """The database at ``url``: asyncpg's pool on PostgreSQL, a SQLAlchemy engine elsewhere."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return SqlAlchemyDatabase(create_engine(url))
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    # min_size=0: start-up does not need the database; connections open on first use.
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=pool_size, reset=_keep_session)
    return PgDatabase(pool, dsn)


async def _keep_session(conn: object) -> None:
    """Nothing to reset when a connection goes back to the pool. asyncpg's default sends a
    reset query on every release (a round trip per request: UNLISTEN, RESET ALL, advisory
    unlock, CLOSE ALL), but the service sets no session state, listens to nothing and takes no
    advisory locks; an open transaction is still rolled back by asyncpg itself."""
