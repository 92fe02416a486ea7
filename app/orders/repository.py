"""Every query of the orders package, as lean Core statements on a connection.

The create-order path's statements are built once, with bind parameters, and each is a whole
transaction on its own (they run on an autocommit connection: no BEGIN/COMMIT round trips).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, cast

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


class OrderRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def product_for_sale(self, product_id: int) -> Row[Any, Any] | None:
        stmt = select(products.c.price_fen, products.c.description).where(
            products.c.id == product_id, products.c.active.is_(True)
        )
        return (await self._conn.execute(stmt)).first()

    async def insert_priced(self, values: Mapping[str, Any], max_fee: int) -> Row[Any] | None:
        """Insert an order priced from its product; None if the product is not on sale or the
        total would exceed ``max_fee``."""
        now = utcnow()
        params = {**values, "created_at": now, "updated_at": now, "max_fee": max_fee}
        row: Row[Any] | None = (await self._conn.execute(_INSERT_PRICED, params)).first()
        return row

    async def by_out_trade_no(self, out_trade_no: str) -> Row[Any] | None:
        stmt = select(orders).where(orders.c.out_trade_no == out_trade_no)
        return (await self._conn.execute(stmt)).first()

    async def by_idempotency_key(self, user_id: int, key: str) -> Row[Any] | None:
        stmt = select(orders).where(orders.c.user_id == user_id, orders.c.idempotency_key == key)
        return (await self._conn.execute(stmt)).first()

    async def list_for_user(self, user_id: int, limit: int, offset: int) -> Sequence[Row[Any]]:
        stmt = (
            select(orders)
            .where(orders.c.user_id == user_id)
            .order_by(orders.c.created_at.desc(), orders.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return (await self._conn.execute(stmt)).all()

    async def set_prepay(
        self,
        out_trade_no: str,
        prepay_id: str | None,
        expires_at: dt.datetime | None,
        error: str | None,
    ) -> bool:
        """Record the outcome of a unified order, only while the order is still payable."""
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

    async def needing_review(self, limit: int) -> Sequence[Row[Any]]:
        stmt = (
            select(orders)
            .where(orders.c.review_reason.is_not(None))
            .order_by(orders.c.updated_at.desc())
            .limit(limit)
        )
        return (await self._conn.execute(stmt)).all()

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
