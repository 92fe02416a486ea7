"""The notify URL WeChat posts payment results to."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import PaymentNotifiesDep
from app.gateway import ApiVersion
from app.inbound import receive_notify

router = APIRouter(tags=["wechat"])


@router.post(
    "/wechat/pay/notify",
    summary="WeChat Pay v2 payment notify",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
)
async def payment_notify(request: Request, notifies: PaymentNotifiesDep) -> Response:
    """Acknowledged (SUCCESS) only after the effect is committed; anything else makes WeChat
    retry, so nothing is lost when the database is down."""
    return await receive_notify(request, notifies, ApiVersion.V2, "payment notify")


@router.post(
    "/wechat/pay/v3/notify",
    summary="WeChat Pay v3 payment notify",
    status_code=204,
    response_class=Response,
)
async def payment_notify_v3(request: Request, notifies: PaymentNotifiesDep) -> Response:
    """Verified over the raw body and its ``Wechatpay-*`` headers before anything is read;
    204 only after the effect is committed, otherwise non-2xx with ``{"code": "FAIL"}``."""
    return await receive_notify(request, notifies, ApiVersion.V3, "v3 payment notify")
