"""The notify URLs WeChat posts payment results to (plain routes: see ``NotifyRoute``)."""

from __future__ import annotations

from fastapi import Request, Response

from app.deps import runtime_of
from app.gateway import ApiVersion
from app.inbound import NotifyRoute, receive_notify


async def payment_notify(request: Request) -> Response:
    """v2: acknowledged (SUCCESS) only after the effect is committed; anything else makes
    WeChat retry, so nothing is lost when the database is down."""
    notifies = runtime_of(request).payment_notifies
    return await receive_notify(request, notifies, ApiVersion.V2, "payment notify")


async def payment_notify_v3(request: Request) -> Response:
    """v3: verified over the raw body and its ``Wechatpay-*`` headers before anything is read;
    204 only after the effect is committed, otherwise non-2xx with ``{"code": "FAIL"}``."""
    notifies = runtime_of(request).payment_notifies
    return await receive_notify(request, notifies, ApiVersion.V3, "v3 payment notify")


routes = [
    NotifyRoute("/wechat/pay/notify", payment_notify),
    NotifyRoute("/wechat/pay/v3/notify", payment_notify_v3),
]
