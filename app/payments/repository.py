"""Every query of the payments package, for SQLite (and any SQLAlchemy backend).

The notify is the hot path: its statements are built once, here, with bind parameters, so a
request pays only for executing them (building them per call cost ~1.6 ms of CPU per notify;
docs/benchmarks.md). On PostgreSQL the same queries run on asyncpg directly
(``app/payments/pgrepository.py``); both satisfy ``PaymentRepo``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError
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


PAID_EVENT = "PAID"


@dataclass(frozen=True, slots=True)
class OrderState:
    id: int
    status: str
    total_fee: int
    transaction_id: str | None


class DuplicateTransaction(Exception):
    """The WeChat ``transaction_id`` already belongs to another order (a unique column)."""


class PaymentRepo(Protocol):
    """The queries the payment rules need, whatever the backend."""

    async def mark_paid(
        self, out_trade_no: str, total_fee: int, values: dict[str, Any], *, after_close: bool
    ) -> int | None:
        """Pay an unpaid order (or, ``after_close``, a closed one) and record its PAID event;
        the order id if it moved, None if it was not in such a state or the amount differs."""
        ...

    async def order_state(self, out_trade_no: str) -> OrderState | None: ...

    async def flag_review(self, order_id: int, reason: str) -> None: ...

    async def add_event(self, order_id: int, kind: str, detail: str = "") -> bool: ...

    async def audit(self, record: AuditRow) -> None: ...


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One row of ``payment_notifies``."""

    received_at: dt.datetime
    verdict: str
    raw: str
    detail: str = ""
    out_trade_no: str | None = None
    transaction_id: str | None = None
    total_fee: int | None = None


class PaymentRepository:
    """``PaymentRepo`` on a SQLAlchemy connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def mark_paid(
        self, out_trade_no: str, total_fee: int, values: dict[str, Any], *, after_close: bool
    ) -> int | None:
        """Pay an unpaid order (or, ``after_close``, a closed one); returns its id if it moved."""
        stmt = _MARK_CLOSED_PAID if after_close else _MARK_UNPAID_PAID
        params = {"no": out_trade_no, "fee": total_fee, "now": utcnow(), **values}
        try:
            result = await self._conn.execute(stmt, params)
        except IntegrityError as exc:
            raise DuplicateTransaction(values["transaction_id"]) from exc
        order_id: int | None = result.scalar_one_or_none()
        if order_id is not None:
            await self.add_event(order_id, PAID_EVENT)
        return order_id

    async def order_state(self, out_trade_no: str) -> OrderState | None:
        row = (await self._conn.execute(_ORDER_STATE, {"no": out_trade_no})).first()
        return None if row is None else OrderState(*row)

    async def flag_review(self, order_id: int, reason: str) -> None:
        params = {"order_id": order_id, "reason": reason, "now": utcnow()}
        await self._conn.execute(_FLAG_REVIEW, params)

    async def add_event(self, order_id: int, kind: str, detail: str = "") -> bool:
        """Record a fact about an order once; False if it was already recorded."""
        stmt = _add_event(self._conn.dialect.name)
        params = {"order_id": order_id, "kind": kind, "detail": detail, "now": utcnow()}
        return bool((await self._conn.execute(stmt, params)).rowcount)

    async def audit(self, record: AuditRow) -> None:
        await self._conn.execute(_AUDIT, asdict(record))
