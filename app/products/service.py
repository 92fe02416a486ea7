"""Catalogue rules: only active products are sold; prices are positive integers of fen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.errors import NotFound
from app.products.repository import ProductRecord

if TYPE_CHECKING:
    from app.uow import Database

DEMO_PRODUCTS = (
    ("短信套餐 100 条", "短信平台-短信套餐购买", 990),
    ("短信套餐 1000 条", "短信平台-短信套餐购买", 8900),
    ("会员月卡", "示例商城-会员充值", 1),
)


class ProductNotFound(NotFound):
    code = "PRODUCT_NOT_FOUND"
    message = "No such product, or it is no longer sold."


class ProductService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_products(self, *, include_inactive: bool = False) -> list[ProductRecord]:
        async with self._db.statement() as tx:
            return await tx.products.list(include_inactive=include_inactive)

    async def add_product(self, name: str, description: str, price_fen: int) -> ProductRecord:
        async with self._db.statement() as tx:
            return await tx.products.add(name, description, price_fen)

    async def set_active(self, product_id: int, active: bool) -> ProductRecord:
        """Enable or disable a product; disabled products cannot be ordered."""
        async with self._db.transaction() as tx:
            if not await tx.products.set_active(product_id, active):
                raise ProductNotFound()
            product = await tx.products.get(product_id)
        assert product is not None
        return product

    async def seed_demo(self) -> int:
        """Add the demo catalogue to an empty database; returns how many were added."""
        async with self._db.transaction() as tx:
            if await tx.products.count():
                return 0
            for name, description, price in DEMO_PRODUCTS:
                await tx.products.add(name, description, price)
        return len(DEMO_PRODUCTS)
