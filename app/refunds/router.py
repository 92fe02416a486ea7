"""Refunds: the merchant's admin API, and the URL WeChat posts refund results to."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from app.deps import AdminDep, RefundServiceDep, runtime_of
from app.errors import error_responses
from app.gateway import ApiVersion
from app.inbound import NotifyRoute, receive_notify
from app.refunds.schemas import RefundIn, RefundOut
from app.refunds.states import RefundStatus

admin_router = APIRouter(prefix="/api/v1/admin/orders", tags=["admin"], dependencies=[AdminDep])


RefundIdempotencyKey = Annotated[
    str | None,
    Header(max_length=64, description="Repeat a refund safely: the same key, the same refund."),
]


@admin_router.post(
    "/{out_trade_no}/refunds",
    status_code=201,
    response_model=RefundOut,
    responses={
        202: {
            "model": RefundOut,
            "description": "Stored; WeChat unreachable, retried by the sweep",
        },
        **error_responses(403, 404, 409, 422, 502),
    },
    summary="Refund part or all of a paid order",
)
async def request_refund(
    out_trade_no: str,
    body: RefundIn,
    response: Response,
    service: RefundServiceDep,
    idempotency_key: RefundIdempotencyKey = None,
) -> RefundOut:
    """201 once WeChat has accepted the refund (status PROCESSING, or already final); 202 when
    WeChat could not be reached: the refund is stored as PENDING and the sweep completes it, so
    do not ask again with a new request (repeat with the same Idempotency-Key instead)."""
    refund = await service.request_refund(
        out_trade_no, body.refund_fee, body.reason, idempotency_key
    )
    if refund.status == RefundStatus.PENDING:
        response.status_code = 202
    return RefundOut.model_validate(refund)


@admin_router.get(
    "/{out_trade_no}/refunds",
    response_model=list[RefundOut],
    responses=error_responses(403, 404),
    summary="The refunds of an order, oldest first",
)
async def list_refunds(out_trade_no: str, service: RefundServiceDep) -> list[RefundOut]:
    return [RefundOut.model_validate(r) for r in await service.refunds_of(out_trade_no)]


async def refund_notify(request: Request) -> Response:
    """v2: acknowledged only after the effect is committed, like the payment notify."""
    notifies = runtime_of(request).refund_notifies
    return await receive_notify(request, notifies, ApiVersion.V2, "refund notify")


async def refund_notify_v3(request: Request) -> Response:
    """v3: verified, decrypted and checked against our refund; 204 only after the effect is
    committed."""
    notifies = runtime_of(request).refund_notifies
    return await receive_notify(request, notifies, ApiVersion.V3, "v3 refund notify")


# The URLs WeChat posts refund results to: plain routes, see ``NotifyRoute``.
notify_routes = [
    NotifyRoute("/wechat/pay/refund-notify", refund_notify),
    NotifyRoute("/wechat/pay/v3/refund-notify", refund_notify_v3),
]
