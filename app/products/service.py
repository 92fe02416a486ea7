"""Catalogue rules: only active products are sold; prices are positive integers of fen."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.products.models import Product
from app.products.repository import ProductRepository

DEMO_PRODUCTS = (
    ("短信套餐 100 条", "短信平台-短信套餐购买", 990),
    ("短信套餐 1000 条", "短信平台-短信套餐购买", 8900),
    ("会员月卡", "示例商城-会员充值", 1),
)


class ProductNotFound(NotFound):
    code = "PRODUCT_NOT_FOUND"
    message = "No such product, or it is no longer sold."


class ProductService:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._repo = ProductRepository(session)

    async def list_products(self, *, include_inactive: bool = False) -> Sequence[Product]:
        async with self._session.begin():
            return await self._repo.list(include_inactive=include_inactive)

    async def add_product(self, name: str, description: str, price_fen: int) -> Product:
        async with self._session.begin():
            return await self._repo.add(name, description, price_fen)

    async def set_active(self, product_id: int, active: bool) -> Product:
        """Enable or disable a product; disabled products cannot be ordered."""
        async with self._session.begin():
            if not await self._repo.set_active(product_id, active):
                raise ProductNotFound()
            product = await self._repo.get(product_id)
        assert product is not None
        return product

    async def seed_demo(self) -> int:
        """Add the demo catalogue to an empty database; returns how many were added."""
        async with self._session.begin():
            if await self._repo.count():
                return 0
            for name, description, price in DEMO_PRODUCTS:
                await self._repo.add(name, description, price)
        return len(DEMO_PRODUCTS)
