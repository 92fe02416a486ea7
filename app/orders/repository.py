"""Every query of the orders package, as lean Core statements on a connection.

The create-order path's statements are built once, with bind parameters, and each is a whole
transaction on its own (they run on an autocommit connection: no BEGIN/COMMIT round trips).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    Row,
    String,
    Table,
    and_,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from app.db import UTCDateTime, utcnow
from app.orders.models import Order
from app.orders.states import PAYABLE, OrderStatus, sources_of
from app.products.models import Product

orders = cast(Table, Order.__table__)
products = cast(Table, Product.__table__)

# Columns the caller gives; the amount and the body come from the product, in the same
# statement, so the price read and the order written cannot disagree.
_GIVEN: dict[str, TypeEngine[Any]] = {
    "out_trade_no": String(),
    "user_id": BigInteger(),
    "openid": String(),
    "product_id": BigInteger(),
    "quantity": Integer(),
    "status": String(),
    "sign_type": String(),
    "client_ip": String(),
    "idempotency_key": String(),
    "time_expire": UTCDateTime(),
    "created_at": UTCDateTime(),
    "updated_at": UTCDateTime(),
}
_INSERT_PRICED = (
    orders.insert()
    .from_select(
        [*_GIVEN, "total_fee", "description"],
        select(
            *(bindparam(name, type_=kind) for name, kind in _GIVEN.items()),
            products.c.price_fen * bindparam("quantity", type_=Integer()),
            products.c.description,
        ).where(
            products.c.id == bindparam("product_id", type_=BigInteger()),
            products.c.active.is_(True),
            products.c.price_fen * bindparam("quantity", type_=Integer()) <= bindparam("max_fee"),
        ),
    )
    .returning(orders)
)
_SET_PREPAY = (
    update(orders)
    .where(orders.c.out_trade_no == bindparam("no"), orders.c.status.in_(sorted(PAYABLE)))
    .values(
        prepay_id=bindparam("prepay_id"),
        prepay_expires_at=bindparam("expires_at"),
        prepay_error=bindparam("error"),
        updated_at=bindparam("now"),
    )
)


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One stored order, as every repository returns it (whatever the driver)."""

    id: int
    out_trade_no: str
    user_id: int
    openid: str
    product_id: int
    quantity: int
    total_fee: int
    description: str
    status: str
    sign_type: str
    client_ip: str
    idempotency_key: str | None
    time_expire: dt.datetime
    prepay_id: str | None
    prepay_expires_at: dt.datetime | None
    prepay_error: str | None
    transaction_id: str | None
    paid_at: dt.datetime | None
    cash_fee: int | None
    refunded_fee: int
    bank_type: str | None
    review_reason: str | None
    closed_at: dt.datetime | None
    sweep_lease_until: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ORDER_COLUMNS}


ORDER_COLUMNS = tuple(f.name for f in fields(OrderRecord))


def _record(row: Row[Any] | None) -> OrderRecord | None:
    return None if row is None else OrderRecord(**row._asdict())


class DuplicateOrder(Exception):
    """The order's idempotency key (or, by a one-in-2**60 chance, its ``out_trade_no``) is taken."""


def unique_violation(exc: IntegrityError) -> bool:
    # PostgreSQL's SQLSTATE through asyncpg, SQLite's extended code through sqlite3.
    return (
        getattr(exc.orig, "sqlstate", None) == "23505"
        or getattr(exc.orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_UNIQUE"
    )


class CreatePathRepo(Protocol):
    """The two writes of create-order, each a whole transaction on its own."""

    async def insert_priced(self, values: Mapping[str, Any], max_fee: int) -> OrderRecord | None:
        """Insert an order priced from its product; None if the product is not on sale or the
        total would exceed ``max_fee``; ``DuplicateOrder`` if its idempotency key is taken."""

    async def set_prepay(
        self,
        out_trade_no: str,
        prepay_id: str | None,
        expires_at: dt.datetime | None,
        error: str | None,
    ) -> bool:
        """Record the outcome of a unified order, only while the order is still payable."""


class OrderRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def product_for_sale(self, product_id: int) -> Row[Any, Any] | None:
        stmt = select(products.c.price_fen, products.c.description).where(
            products.c.id == product_id, products.c.active.is_(True)
        )
        return (await self._conn.execute(stmt)).first()

    async def insert_priced(self, values: Mapping[str, Any], max_fee: int) -> OrderRecord | None:
        now = utcnow()
        params = {**values, "created_at": now, "updated_at": now, "max_fee": max_fee}
        try:
            return _record((await self._conn.execute(_INSERT_PRICED, params)).first())
        except IntegrityError as exc:
            if unique_violation(exc):
                raise DuplicateOrder() from exc
            raise

    async def by_out_trade_no(self, out_trade_no: str) -> OrderRecord | None:
        stmt = select(orders).where(orders.c.out_trade_no == out_trade_no)
        return _record((await self._conn.execute(stmt)).first())

    async def by_idempotency_key(self, user_id: int, key: str) -> OrderRecord | None:
        stmt = select(orders).where(orders.c.user_id == user_id, orders.c.idempotency_key == key)
        return _record((await self._conn.execute(stmt)).first())

    async def list_for_user(self, user_id: int, limit: int, offset: int) -> list[OrderRecord]:
        stmt = (
            select(orders)
            .where(orders.c.user_id == user_id)
            .order_by(orders.c.created_at.desc(), orders.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return [OrderRecord(**row._asdict()) for row in await self._conn.execute(stmt)]

    async def set_prepay(
        self,
        out_trade_no: str,
        prepay_id: str | None,
        expires_at: dt.datetime | None,
        error: str | None,
    ) -> bool:
        params = {
            "no": out_trade_no,
            "prepay_id": prepay_id,
            "expires_at": expires_at,
            "error": error,
            "now": utcnow(),
        }
        return bool((await self._conn.execute(_SET_PREPAY, params)).rowcount)

    async def move(self, out_trade_no: str, target: OrderStatus, **values: Any) -> bool:
        """Apply one allowed move with a guarded UPDATE; False if the order was not in a source
        status (another writer got there first, or the move is not allowed)."""
        sources = [s.value for s in sources_of(target)]
        stmt = (
            update(orders)
            .where(and_(orders.c.out_trade_no == out_trade_no, orders.c.status.in_(sources)))
            .values(status=target.value, updated_at=utcnow(), **values)
        )
        return bool((await self._conn.execute(stmt)).rowcount)

    async def flag_review(self, out_trade_no: str, reason: str) -> None:
        stmt = (
            update(orders)
            .where(orders.c.out_trade_no == out_trade_no)
            .values(review_reason=reason, updated_at=utcnow())
        )
        await self._conn.execute(stmt)

    async def needing_review(self, limit: int) -> list[OrderRecord]:
        stmt = (
            select(orders)
            .where(orders.c.review_reason.is_not(None))
            .order_by(orders.c.updated_at.desc())
            .limit(limit)
        )
        return [OrderRecord(**row._asdict()) for row in await self._conn.execute(stmt)]

    async def claim_for_sweep(
        self, created_before: dt.datetime, lease_seconds: int, limit: int
    ) -> list[str]:
        """Lease up to ``limit`` payable orders created before a moment, oldest first.

        The lease (not a lock) keeps other replicas off these rows while this one talks to
        WeChat; ``SKIP LOCKED`` on PostgreSQL keeps two claims from waiting on each other.
        """
        now = utcnow()
        free = or_(orders.c.sweep_lease_until.is_(None), orders.c.sweep_lease_until < now)
        candidates = (
            select(orders.c.id)
            .where(orders.c.status.in_(PAYABLE), orders.c.created_at < created_before, free)
            .order_by(orders.c.created_at)
            .limit(limit)
        )
        if self._conn.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        stmt = (
            update(orders)
            .where(orders.c.id.in_(candidates.scalar_subquery()), free)
            .values(sweep_lease_until=now + dt.timedelta(seconds=lease_seconds))
            .returning(orders.c.out_trade_no)
        )
        return list((await self._conn.execute(stmt)).scalars())
