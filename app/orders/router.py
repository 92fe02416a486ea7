from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query

from app.deps import AdminDep, ClientIpDep, CurrentUserDep, OrderServiceDep
from app.errors import error_responses
from app.leanroute import LeanRoute
from app.orders.repository import OrderRecord
from app.orders.schemas import (
    CreateOrderRequest,
    OrderOut,
    OrderPage,
    OrderWithPayParams,
)
from app.orders.service import OrderWithParams

router = APIRouter(prefix="/api/v1/orders", tags=["orders"], route_class=LeanRoute)


OrderIdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=64, description="Repeat a create safely: the same key returns the same order."
    ),
]


def order_out(order: OrderRecord) -> OrderOut:
    return OrderOut.model_validate(order, from_attributes=True)


def with_params(result: OrderWithParams) -> OrderWithPayParams:
    # Validated once, straight from the row (no intermediate OrderOut and dump).
    return OrderWithPayParams.model_validate(
        {**result.order.as_dict(), "pay_params": result.pay_params}
    )


@router.post(
    "",
    status_code=201,
    response_model=OrderWithPayParams,
    responses=error_responses(401, 404, 409, 422, 502, 503),
    summary="Create an order and get the parameters for wx.requestPayment",
)
async def create_order(
    body: CreateOrderRequest,
    user: CurrentUserDep,
    service: OrderServiceDep,
    ip: ClientIpDep,
    idempotency_key: OrderIdempotencyKey = None,
) -> OrderWithPayParams:
    result = await service.create_order(user, body.product_id, body.quantity, ip, idempotency_key)
    return with_params(result)


@router.get("", response_model=OrderPage, responses=error_responses(401))
async def list_orders(
    user: CurrentUserDep,
    service: OrderServiceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> OrderPage:
    orders = await service.list_orders(user, limit, offset)
    return OrderPage(items=[order_out(o) for o in orders], limit=limit, offset=offset)


@router.get(
    "/{out_trade_no}",
    response_model=OrderOut,
    responses=error_responses(401, 404, 502, 503),
    summary="One of the caller's orders; sync=true asks WeChat first",
)
async def get_order(
    out_trade_no: str,
    user: CurrentUserDep,
    service: OrderServiceDep,
    sync: bool = False,
) -> OrderOut:
    return order_out(await service.get_order(user, out_trade_no, sync=sync))


@router.post(
    "/{out_trade_no}/pay-params",
    response_model=OrderWithPayParams,
    responses=error_responses(401, 404, 409, 502, 503),
    summary="Fresh wx.requestPayment parameters for an unpaid order",
)
async def pay_params(
    out_trade_no: str, user: CurrentUserDep, service: OrderServiceDep
) -> OrderWithPayParams:
    return with_params(await service.pay_params(user, out_trade_no))


@router.post(
    "/{out_trade_no}/close",
    response_model=OrderOut,
    responses=error_responses(401, 404, 409, 502, 503),
    summary="Close an unpaid order (not within 5 minutes of creating it)",
)
async def close_order(
    out_trade_no: str, user: CurrentUserDep, service: OrderServiceDep
) -> OrderOut:
    return order_out(await service.close_order(user, out_trade_no))


admin_router = APIRouter(prefix="/api/v1/admin/orders", tags=["admin"], dependencies=[AdminDep])


class ReviewOut(OrderOut):
    review_reason: str
    user_id: int


@admin_router.get(
    "/review",
    response_model=list[ReviewOut],
    responses=error_responses(403),
    summary="Orders where money and records disagree (amount mismatch, paid after close)",
)
async def orders_needing_review(
    service: OrderServiceDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[ReviewOut]:
    orders = await service.needing_review(limit)
    return [ReviewOut.model_validate(o, from_attributes=True) for o in orders]
