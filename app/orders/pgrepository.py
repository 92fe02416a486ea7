"""``CreatePathRepo`` on asyncpg directly: create-order's two writes on PostgreSQL.

Create-order must keep up with a promotion spike, and on this path SQLAlchemy's async layer
cost about half of the worker's CPU (docs/benchmarks.md). The SQL mirrors ``_INSERT_PRICED``
and ``_SET_PREPAY`` in ``app/orders/repository.py``; the whole test suite runs against both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import asyncpg
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy

from app.db import utcnow
from app.orders.repository import ORDER_COLUMNS, DuplicateOrder, OrderRecord
from app.orders.states import PAYABLE

# The caller's columns, then the two the product prices in the same statement, so the price
# read and the order written cannot disagree.
_GIVEN = (
    "out_trade_no, user_id, openid, product_id, quantity, status, sign_type, client_ip,"
    " idempotency_key, time_expire, created_at, updated_at"
)
_INSERT_PRICED = (
    f"INSERT INTO orders ({_GIVEN}, total_fee, description)"  # noqa: S608 (no input in SQL)
    " SELECT $1, $2, $3, $4, $5::integer, $6, $7, $8, $9, $10, $11, $11,"
    " p.price_fen * $5::integer, p.description"
    " FROM products p WHERE p.id = $4 AND p.active AND p.price_fen * $5::integer <= $12"
    f" RETURNING {', '.join(ORDER_COLUMNS)}"
)
_PAYABLE = ", ".join(f"'{status.value}'" for status in sorted(PAYABLE))
_SET_PREPAY = (
    "UPDATE orders SET prepay_id = $2, prepay_expires_at = $3, prepay_error = $4,"  # noqa: S608
    f" updated_at = $5 WHERE out_trade_no = $1 AND status IN ({_PAYABLE})"
)


class AsyncpgOrderRepository:
    """Runs on a pooled connection outside any transaction: each statement commits alone."""

    def __init__(self, conn: PoolConnectionProxy[Record]) -> None:
        self._conn = conn

    async def insert_priced(self, values: Mapping[str, Any], max_fee: int) -> OrderRecord | None:
        try:
            row = await self._insert_priced(values, max_fee)
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateOrder() from exc
        # RETURNING names ORDER_COLUMNS, the record's fields in order.
        return None if row is None else OrderRecord(*row)

    async def _insert_priced(self, values: Mapping[str, Any], max_fee: int) -> Record | None:
        return await self._conn.fetchrow(
            _INSERT_PRICED,
            values["out_trade_no"],
            values["user_id"],
            values["openid"],
            values["product_id"],
            values["quantity"],
            values["status"],
            values["sign_type"],
            values["client_ip"],
            values["idempotency_key"],
            values["time_expire"],
            utcnow(),
            max_fee,
        )

    async def set_prepay(
        self,
        out_trade_no: str,
        prepay_id: str | None,
        expires_at: dt.datetime | None,
        error: str | None,
    ) -> bool:
        status: str = await self._conn.execute(
            _SET_PREPAY, out_trade_no, prepay_id, expires_at, error, utcnow()
        )
        return status != "UPDATE 0"
