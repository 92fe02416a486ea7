"""Every query of the payments package.

The notify is the hot path: its statements are built once, here, with bind parameters, so a
request pays only for executing them (building them per call cost ~1.6 ms of CPU per notify;
docs/benchmarks.md).
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import utcnow
from app.dbutil import upsert
from app.orders.models import Order
from app.orders.states import PAYABLE, OrderStatus, ReviewReason, sources_of
from app.payments.models import OrderEvent, PaymentNotify

orders = cast(Table, Order.__table__)
notifies = cast(Table, PaymentNotify.__table__)
events = cast(Table, OrderEvent.__table__)


def _mark_paid(from_statuses: frozenset[OrderStatus], **extra: Any) -> Any:
    """One guarded UPDATE: only an order in ``from_statuses`` whose amount matches is paid, so
    of two racing notifies only one sees a row."""
    allowed = sorted(s.value for s in from_statuses & sources_of(OrderStatus.SUCCESS))
    return (
        update(orders)
        .where(
            orders.c.out_trade_no == bindparam("no"),
            orders.c.status.in_(allowed),
            orders.c.total_fee == bindparam("fee"),
        )
        .values(
            status=OrderStatus.SUCCESS.value,
            transaction_id=bindparam("transaction_id"),
            paid_at=bindparam("paid_at"),
            cash_fee=bindparam("cash_fee"),
            bank_type=bindparam("bank_type"),
            updated_at=bindparam("now"),
            **extra,
        )
        .returning(orders.c.id)
    )


_MARK_UNPAID_PAID = _mark_paid(PAYABLE)
# The user paid just before our close reached WeChat: record it, flagged for a refund review.
_MARK_CLOSED_PAID = _mark_paid(
    frozenset({OrderStatus.CLOSED}), review_reason=ReviewReason.PAID_AFTER_CLOSE.value
)
_ORDER_STATE = select(
    orders.c.id, orders.c.status, orders.c.total_fee, orders.c.transaction_id
).where(orders.c.out_trade_no == bindparam("no"))
_FLAG_REVIEW = (
    update(orders)
    .where(orders.c.id == bindparam("order_id"))
    .values(review_reason=bindparam("reason"), updated_at=bindparam("now"))
)
_AUDIT = notifies.insert()


@cache
def _add_event(dialect_name: str) -> Any:
    return (
        upsert(dialect_name, events)
        .values(
            order_id=bindparam("order_id"),
            kind=bindparam("kind"),
            detail=bindparam("detail"),
            created_at=bindparam("now"),
        )
        .on_conflict_do_nothing(index_elements=[events.c.order_id, events.c.kind])
    )


class PaymentRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def mark_paid(
        self, out_trade_no: str, total_fee: int, values: dict[str, Any], *, after_close: bool
    ) -> int | None:
        """Pay an unpaid order (or, ``after_close``, a closed one); returns its id if it moved."""
        stmt = _MARK_CLOSED_PAID if after_close else _MARK_UNPAID_PAID
        params = {"no": out_trade_no, "fee": total_fee, "now": utcnow(), **values}
        order_id: int | None = (await self._conn.execute(stmt, params)).scalar_one_or_none()
        return order_id

    async def order_state(self, out_trade_no: str) -> Row[Any, Any, Any, Any] | None:
        return (await self._conn.execute(_ORDER_STATE, {"no": out_trade_no})).first()

    async def flag_review(self, order_id: int, reason: str) -> None:
        params = {"order_id": order_id, "reason": reason, "now": utcnow()}
        await self._conn.execute(_FLAG_REVIEW, params)

    async def add_event(self, order_id: int, kind: str, detail: str = "") -> bool:
        """Record a fact about an order once; False if it was already recorded."""
        stmt = _add_event(self._conn.dialect.name)
        params = {"order_id": order_id, "kind": kind, "detail": detail, "now": utcnow()}
        return bool((await self._conn.execute(stmt, params)).rowcount)

    async def audit(
        self,
        *,
        verdict: str,
        raw: str,
        detail: str = "",
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        total_fee: int | None = None,
        received_at: dt.datetime | None = None,
    ) -> None:
        params = {
            "received_at": received_at or utcnow(),
            "verdict": verdict,
            "raw": raw,
            "detail": detail,
            "out_trade_no": out_trade_no,
            "transaction_id": transaction_id,
            "total_fee": total_fee,
        }
        await self._conn.execute(_AUDIT, params)
