from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.db import MAX_BIGINT
from app.deps import AdminDep, ProductServiceDep
from app.errors import error_responses
from app.leanroute import LeanRoute
from app.products.schemas import ProductIn, ProductOut

router = APIRouter(tags=["products"], route_class=LeanRoute)
admin_router = APIRouter(prefix="/api/v1/admin/products", tags=["admin"], dependencies=[AdminDep])


ProductId = Annotated[int, Path(gt=0, le=MAX_BIGINT)]


@router.get("/api/v1/products", response_model=list[ProductOut], summary="Products on sale")
async def list_products(service: ProductServiceDep) -> list[ProductOut]:
    return [ProductOut.model_validate(p) for p in await service.list_products()]


@admin_router.get("", response_model=list[ProductOut], responses=error_responses(403))
async def admin_list_products(service: ProductServiceDep) -> list[ProductOut]:
    products = await service.list_products(include_inactive=True)
    return [ProductOut.model_validate(p) for p in products]


@admin_router.post(
    "", response_model=ProductOut, status_code=201, responses=error_responses(403, 422)
)
async def add_product(body: ProductIn, service: ProductServiceDep) -> ProductOut:
    product = await service.add_product(body.name, body.description, body.price_fen)
    return ProductOut.model_validate(product)


@admin_router.post(
    "/{product_id}/disable", response_model=ProductOut, responses=error_responses(403, 404)
)
async def disable_product(product_id: ProductId, service: ProductServiceDep) -> ProductOut:
    return ProductOut.model_validate(await service.set_active(product_id, False))


@admin_router.post(
    "/{product_id}/enable", response_model=ProductOut, responses=error_responses(403, 404)
)
async def enable_product(product_id: ProductId, service: ProductServiceDep) -> ProductOut:
    return ProductOut.model_validate(await service.set_active(product_id, True))
