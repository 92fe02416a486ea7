"""``PaymentRepo`` on asyncpg directly: the notify's queries on PostgreSQL.

Measured on the notify path, the same four statements cost about twice the CPU through
SQLAlchemy's async layer as through asyncpg (docs/benchmarks.md), and the notify must keep up
with WeChat retry storms. The SQL mirrors ``app/payments/repository.py`` statement for
statement; the whole test suite runs against both.
"""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

import asyncpg
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy

from app.db import utcnow
from app.orders.states import PAYABLE, OrderStatus, ReviewReason, sources_of
from app.payments.repository import PAID_EVENT, AuditRow, DuplicateTransaction, OrderState


def _sql_list(statuses: frozenset[OrderStatus]) -> str:
    # Our own enum values, never input: safe to inline, and it keeps the plan fixed.
    allowed = statuses & sources_of(OrderStatus.SUCCESS)
    return ", ".join(f"'{status.value}'" for status in sorted(allowed))


def _mark_paid_sql(statuses: frozenset[OrderStatus], extra: str = "") -> str:
    # The event rides in the same statement (a data-modifying CTE): one round trip, and it
    # exists exactly when the guarded UPDATE moved the order.
    return (
        "WITH paid AS (UPDATE orders SET status = 'SUCCESS', transaction_id = $3,"  # noqa: S608
        f" paid_at = $4, cash_fee = $5, bank_type = $6, updated_at = $7{extra}"
        f" WHERE out_trade_no = $1 AND total_fee = $2 AND status IN ({_sql_list(statuses)})"
        " RETURNING id), event AS (INSERT INTO order_events (order_id, kind, detail,"
        f" created_at) SELECT id, '{PAID_EVENT}', '', $7 FROM paid"
        " ON CONFLICT (order_id, kind) DO NOTHING) SELECT id FROM paid"
    )


_MARK_UNPAID_PAID = _mark_paid_sql(PAYABLE)
_MARK_CLOSED_PAID = _mark_paid_sql(
    frozenset({OrderStatus.CLOSED}), f", review_reason = '{ReviewReason.PAID_AFTER_CLOSE.value}'"
)
_ORDER_STATE = "SELECT id, status, total_fee, transaction_id FROM orders WHERE out_trade_no = $1"
_FLAG_REVIEW = "UPDATE orders SET review_reason = $2, updated_at = $3 WHERE id = $1"
_ADD_EVENT = (
    "INSERT INTO order_events (order_id, kind, detail, created_at) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (order_id, kind) DO NOTHING"
)
_AUDIT = (
    "INSERT INTO payment_notifies (received_at, verdict, raw, detail, out_trade_no,"
    " transaction_id, total_fee) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


class AsyncpgPaymentRepository:
    def __init__(self, conn: PoolConnectionProxy[Record]) -> None:
        self._conn = conn

    async def mark_paid(
        self, out_trade_no: str, total_fee: int, values: dict[str, Any], *, after_close: bool
    ) -> int | None:
        sql = _MARK_CLOSED_PAID if after_close else _MARK_UNPAID_PAID
        try:
            order_id: int | None = await self._conn.fetchval(
                sql,
                out_trade_no,
                total_fee,
                values["transaction_id"],
                values["paid_at"],
                values["cash_fee"],
                values["bank_type"],
                utcnow(),
            )
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateTransaction(values["transaction_id"]) from exc
        return order_id

    async def order_state(self, out_trade_no: str) -> OrderState | None:
        row = await self._conn.fetchrow(_ORDER_STATE, out_trade_no)
        return None if row is None else OrderState(*row)

    async def flag_review(self, order_id: int, reason: str) -> None:
        await self._conn.execute(_FLAG_REVIEW, order_id, reason, utcnow())

    async def add_event(self, order_id: int, kind: str, detail: str = "") -> bool:
        status: str = await self._conn.execute(_ADD_EVENT, order_id, kind, detail, utcnow())
        return status.endswith(" 1")

    async def audit(self, record: AuditRow) -> None:
        await self._conn.execute(_AUDIT, *astuple(record))
