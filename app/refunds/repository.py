"""Every query of the refunds package (SQLAlchemy Core; refunds are not a hot path)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any, cast

from sqlalchemy import Row, Table, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import utcnow
from app.orders.models import Order
from app.orders.repository import unique_violation
from app.orders.states import OrderStatus, ReviewReason
from app.orders.states import sources_of as order_sources_of
from app.refunds.models import Refund
from app.refunds.states import OPEN, RefundStatus, sources_of

orders = cast(Table, Order.__table__)
refunds = cast(Table, Refund.__table__)

# An order can be refunded once paid, and again while refunds leave some of it unrefunded.
REFUNDABLE = (OrderStatus.SUCCESS.value, OrderStatus.REFUND.value)


@dataclass(frozen=True, slots=True)
class RefundRecord:
    id: int
    out_refund_no: str
    order_id: int
    refund_fee: int
    reason: str | None
    status: str
    idempotency_key: str | None
    refund_id: str | None
    error: str | None
    success_time: dt.datetime | None
    lease_until: dt.datetime | None
    lease_token: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


REFUND_COLUMNS = tuple(f.name for f in fields(RefundRecord))


@dataclass(frozen=True, slots=True)
class RefundableOrder:
    id: int
    out_trade_no: str
    total_fee: int
    refunded_fee: int
    status: str
    transaction_id: str | None


_REFUNDABLE_ORDER = select(
    orders.c.id,
    orders.c.out_trade_no,
    orders.c.total_fee,
    orders.c.refunded_fee,
    orders.c.status,
    orders.c.transaction_id,
)


class DuplicateRefund(Exception):
    """The refund's idempotency key is already used on this order."""


def _record(row: Row[Any] | None) -> RefundRecord | None:
    return None if row is None else RefundRecord(**row._asdict())


class RefundRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def order(self, out_trade_no: str) -> RefundableOrder | None:
        stmt = _REFUNDABLE_ORDER.where(orders.c.out_trade_no == out_trade_no)
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else RefundableOrder(*row)

    async def order_by_id(self, order_id: int) -> RefundableOrder:
        stmt = _REFUNDABLE_ORDER.where(orders.c.id == order_id)
        return RefundableOrder(*(await self._conn.execute(stmt)).one())

    async def reserve(self, order_id: int, amount: int) -> bool:
        """Set ``amount`` aside on a paid order, only if refunds stay within what was paid.
        One guarded UPDATE: racing refunds cannot both pass the check."""
        stmt = (
            update(orders)
            .where(
                orders.c.id == order_id,
                orders.c.status.in_(REFUNDABLE),
                orders.c.refunded_fee + amount <= orders.c.total_fee,
            )
            .values(refunded_fee=orders.c.refunded_fee + amount, updated_at=utcnow())
        )
        return bool((await self._conn.execute(stmt)).rowcount)

    async def release(self, order_id: int, amount: int) -> None:
        stmt = (
            update(orders)
            .where(orders.c.id == order_id)
            .values(refunded_fee=orders.c.refunded_fee - amount, updated_at=utcnow())
        )
        await self._conn.execute(stmt)

    async def mark_order_refunded(self, order_id: int) -> None:
        sources = [s.value for s in order_sources_of(OrderStatus.REFUND)]
        stmt = (
            update(orders)
            .where(orders.c.id == order_id, orders.c.status.in_(sources))
            .values(status=OrderStatus.REFUND.value, updated_at=utcnow())
        )
        await self._conn.execute(stmt)

    async def flag_order(self, order_id: int, reason: ReviewReason) -> None:
        stmt = (
            update(orders)
            .where(orders.c.id == order_id)
            .values(review_reason=reason.value, updated_at=utcnow())
        )
        await self._conn.execute(stmt)

    async def add(self, values: dict[str, Any], token: str, lease: dt.timedelta) -> RefundRecord:
        """Store a ``PENDING`` refund, leased to its creator (``token``) for ``lease``."""
        now = utcnow()
        stmt = (
            refunds.insert()
            .values(
                **values,
                status=RefundStatus.PENDING.value,
                lease_until=now + lease,
                lease_token=token,
                created_at=now,
                updated_at=now,
            )
            .returning(*refunds.c)
        )
        try:
            row = (await self._conn.execute(stmt)).one()
        except IntegrityError as exc:
            if unique_violation(exc):
                raise DuplicateRefund() from exc
            raise
        return RefundRecord(**row._asdict())

    async def by_key(self, order_id: int, key: str) -> RefundRecord | None:
        stmt = select(refunds).where(
            refunds.c.order_id == order_id, refunds.c.idempotency_key == key
        )
        return _record((await self._conn.execute(stmt)).first())

    async def by_out_refund_no(self, out_refund_no: str) -> RefundRecord | None:
        stmt = select(refunds).where(refunds.c.out_refund_no == out_refund_no)
        return _record((await self._conn.execute(stmt)).first())

    async def of_order(self, order_id: int) -> list[RefundRecord]:
        stmt = select(refunds).where(refunds.c.order_id == order_id).order_by(refunds.c.id)
        return [RefundRecord(**row._asdict()) for row in await self._conn.execute(stmt)]

    async def move(
        self, out_refund_no: str, target: RefundStatus, **values: Any
    ) -> RefundRecord | None:
        """Apply one allowed move with a guarded UPDATE; None if the refund was not in a source
        status (another writer got there first, or the move is not allowed)."""
        sources = [s.value for s in sources_of(target)]
        stmt = (
            update(refunds)
            .where(refunds.c.out_refund_no == out_refund_no, refunds.c.status.in_(sources))
            .values(status=target.value, updated_at=utcnow(), **values)
            .returning(*refunds.c)
        )
        return _record((await self._conn.execute(stmt)).first())

    async def note_error(self, out_refund_no: str, error: str) -> None:
        stmt = (
            update(refunds)
            .where(refunds.c.out_refund_no == out_refund_no)
            .values(error=error[:500], updated_at=utcnow())
        )
        await self._conn.execute(stmt)

    async def take_lease(self, out_refund_no: str, token: str, lease: dt.timedelta) -> bool:
        """Lease one open refund to ``token`` unless someone else's lease is running."""
        now = utcnow()
        stmt = (
            update(refunds)
            .where(
                refunds.c.out_refund_no == out_refund_no,
                refunds.c.status.in_([s.value for s in OPEN]),
                or_(refunds.c.lease_until.is_(None), refunds.c.lease_until < now),
            )
            .values(lease_until=now + lease, lease_token=token)
        )
        return bool((await self._conn.execute(stmt)).rowcount)

    async def renew_lease(self, out_refund_no: str, token: str, lease: dt.timedelta) -> bool:
        """Extend our lease; False if it is no longer ours (it ran out and was taken)."""
        stmt = (
            update(refunds)
            .where(refunds.c.out_refund_no == out_refund_no, refunds.c.lease_token == token)
            .values(lease_until=utcnow() + lease)
        )
        return bool((await self._conn.execute(stmt)).rowcount)

    async def release_lease(self, out_refund_no: str, token: str) -> None:
        """End our lease; the refund counts as handled now (the sweep's clock restarts)."""
        stmt = (
            update(refunds)
            .where(refunds.c.out_refund_no == out_refund_no, refunds.c.lease_token == token)
            .values(lease_until=None, lease_token=None, updated_at=utcnow())
        )
        await self._conn.execute(stmt)

    async def overdue(self, due: dict[RefundStatus, dt.datetime], limit: int) -> list[str]:
        """Up to ``limit`` open, unleased refunds untouched since their status's due moment,
        least recently handled first (so long-PROCESSING ones cannot starve the rest)."""
        now = utcnow()
        free = or_(refunds.c.lease_until.is_(None), refunds.c.lease_until < now)
        late = or_(
            *(
                (refunds.c.status == status.value) & (refunds.c.updated_at < moment)
                for status, moment in due.items()
            )
        )
        stmt = (
            select(refunds.c.out_refund_no)
            .where(late, free)
            .order_by(refunds.c.updated_at, refunds.c.id)
            .limit(limit)
        )
        return list((await self._conn.execute(stmt)).scalars())
