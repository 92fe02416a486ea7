"""Test databases: a fresh one per test session, built by ``alembic upgrade head``.

SQLite by default; PostgreSQL when ``WXPAY_TEST_DATABASE_URL`` names a server database (a new
database is created beside it and dropped afterwards, so tests never touch that one's data).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command
from app.db import Base
from app.orders.states import OrderStatus

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


async def _admin(url: str, sql: str) -> None:
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_database_url() -> Iterator[str]:
    """A URL for an empty database that exists for the duration of the block."""
    server = os.environ.get("WXPAY_TEST_DATABASE_URL")
    if not server:
        with tempfile.TemporaryDirectory(prefix="wxpay-test-") as tmp:
            yield f"sqlite+aiosqlite:///{tmp}/test.db"
        return
    import asyncio

    name = f"wxpay_t_{secrets.token_hex(6)}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def truncate_all(engine: AsyncEngine) -> None:
    """Empty every table, so each test starts from a migrated, empty database."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await conn.execute(text(f"DELETE FROM {table}"))


def order_values(
    no: str,
    *,
    user_id: int = 1,
    openid: str = "o-1",
    key: str | None = None,
    product_id: int = 1,
    quantity: int = 1,
    time_expire: dt.datetime,
) -> dict[str, Any]:
    """What ``OrderRepository.insert_priced`` takes for a v2 NOTPAY order (it prices it)."""
    return {
        "out_trade_no": no,
        "user_id": user_id,
        "openid": openid,
        "product_id": product_id,
        "quantity": quantity,
        "status": OrderStatus.NOTPAY.value,
        "sign_type": "MD5",
        "api_version": "v2",
        "client_ip": "127.0.0.1",
        "idempotency_key": key,
        "time_expire": time_expire,
    }
