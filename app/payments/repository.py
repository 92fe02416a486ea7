"""Every query of the payments package, as lean Core statements (the notify is a hot path)."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import Row, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import utcnow
from app.dbutil import upsert
from app.orders.models import Order
from app.orders.states import OrderStatus, sources_of
from app.payments.models import OrderEvent, PaymentNotify

orders = cast(Table, Order.__table__)
notifies = cast(Table, PaymentNotify.__table__)
events = cast(Table, OrderEvent.__table__)


class PaymentRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def mark_paid(
        self,
        out_trade_no: str,
        total_fee: int,
        from_statuses: frozenset[OrderStatus],
        values: dict[str, Any],
    ) -> int | None:
        """Move the order to SUCCESS if it is in ``from_statuses`` and the amount matches.

        One guarded UPDATE: of two racing notifies only one sees a row; returns the order id.
        """
        allowed = from_statuses & sources_of(OrderStatus.SUCCESS)
        stmt = (
            update(orders)
            .where(
                orders.c.out_trade_no == out_trade_no,
                orders.c.status.in_([s.value for s in allowed]),
                orders.c.total_fee == total_fee,
            )
            .values(status=OrderStatus.SUCCESS.value, updated_at=utcnow(), **values)
            .returning(orders.c.id)
        )
        order_id: int | None = (await self._conn.execute(stmt)).scalar_one_or_none()
        return order_id

    async def order_state(self, out_trade_no: str) -> Row[Any, Any, Any, Any] | None:
        stmt = select(
            orders.c.id, orders.c.status, orders.c.total_fee, orders.c.transaction_id
        ).where(orders.c.out_trade_no == out_trade_no)
        return (await self._conn.execute(stmt)).first()

    async def flag_review(self, order_id: int, reason: str) -> None:
        stmt = update(orders).where(orders.c.id == order_id).values(review_reason=reason)
        await self._conn.execute(stmt)

    async def add_event(self, order_id: int, kind: str, detail: str = "") -> bool:
        """Record a fact about an order once; False if it was already recorded."""
        stmt = (
            upsert(self._conn.dialect.name, events)
            .values(order_id=order_id, kind=kind, detail=detail, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[events.c.order_id, events.c.kind])
        )
        return bool((await self._conn.execute(stmt)).rowcount)

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
        stmt = notifies.insert().values(
            received_at=received_at or utcnow(),
            verdict=verdict,
            raw=raw,
            detail=detail,
            out_trade_no=out_trade_no,
            transaction_id=transaction_id,
            total_fee=total_fee,
        )
        await self._conn.execute(stmt)
