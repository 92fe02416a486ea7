"""Every query of the product catalogue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.products.models import Product


class ProductRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def list(self, *, include_inactive: bool = False) -> Sequence[Product]:
        stmt = select(Product).order_by(Product.id)
        if not include_inactive:
            stmt = stmt.where(Product.active.is_(True))
        return (await self._session.scalars(stmt)).all()

    async def get(self, product_id: int) -> Product | None:
        return await self._session.get(Product, product_id)

    async def add(self, name: str, description: str, price_fen: int) -> Product:
        product = Product(name=name, description=description, price_fen=price_fen, active=True)
        self._session.add(product)
        await self._session.flush()
        return product

    async def set_active(self, product_id: int, active: bool) -> bool:
        stmt = update(Product).where(Product.id == product_id).values(active=active)
        result = cast(CursorResult[Any], await self._session.execute(stmt))
        return bool(result.rowcount)

    async def count(self) -> int:
        return len((await self._session.scalars(select(Product.id))).all())
