"""Every statement on ``products``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import cast

from sqlalchemy import Table, bindparam, func, select, update

from app.db import utcnow
from app.products.models import Product
from app.sql import Executor

_products = cast(Table, Product.__table__)


@dataclass(frozen=True, slots=True)
class ProductRecord:
    id: int
    name: str
    description: str
    price_fen: int
    active: bool
    created_at: dt.datetime


_ALL = [_products.c[f.name] for f in fields(ProductRecord)]
_ON_SALE = select(*_ALL).where(_products.c.active.is_(True)).order_by(_products.c.id)
_EVERY = select(*_ALL).order_by(_products.c.id)
_BY_ID = select(*_ALL).where(_products.c.id == bindparam("pid"))
_ADD = (
    _products.insert()
    .values(
        name=bindparam("name"),
        description=bindparam("description"),
        price_fen=bindparam("price_fen"),
        active=True,
        created_at=bindparam("now"),
    )
    .returning(*_ALL)
)
_SET_ACTIVE = (
    update(_products).where(_products.c.id == bindparam("pid")).values(active=bindparam("active"))
)
_COUNT = select(func.count()).select_from(_products)


class ProductRepository:
    def __init__(self, sql: Executor) -> None:
        self._sql = sql

    async def list(self, *, include_inactive: bool = False) -> list[ProductRecord]:
        rows = await self._sql.fetch(_EVERY if include_inactive else _ON_SALE)
        return [ProductRecord(*row) for row in rows]

    async def get(self, product_id: int) -> ProductRecord | None:
        row = await self._sql.fetchrow(_BY_ID, {"pid": product_id})
        return None if row is None else ProductRecord(*row)

    async def add(self, name: str, description: str, price_fen: int) -> ProductRecord:
        params = {"name": name, "description": description, "price_fen": price_fen, "now": utcnow()}
        row = await self._sql.fetchrow(_ADD, params)
        assert row is not None  # INSERT ... RETURNING always returns the row
        return ProductRecord(*row)

    async def set_active(self, product_id: int, active: bool) -> bool:
        return bool(await self._sql.execute(_SET_ACTIVE, {"pid": product_id, "active": active}))

    async def count(self) -> int:
        return int(await self._sql.scalar(_COUNT))
