"""Annotated dependencies: how routers reach shared resources and the current user.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread,
a thread hop per request for no gain.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPBearer

from app.auth.service import AuthService, CurrentUser
from app.config import Settings
from app.errors import AdminForbidden, SessionMissing
from app.events.service import WebhookService
from app.netutil import client_ip
from app.operations import OperationsService
from app.orders.service import OrderService
from app.products.service import ProductService
from app.refunds.service import RefundService
from app.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    """The process's services; the WeChat notify routes, which take no dependencies (see
    ``app.inbound.NotifyRoute``), read theirs from it."""
    runtime: Runtime = request.app.state.runtime
    return runtime


# Each dependency reads the runtime straight from the request: FastAPI resolves every
# dependency node on every request (~20 µs of CPU each here, bench/reads.py), so a shared
# "runtime" node under each of them would cost as much as the lookups themselves.


async def get_operations_service(request: Request) -> OperationsService:
    return runtime_of(request).operations


async def get_settings_dep(request: Request) -> Settings:
    return runtime_of(request).settings


async def get_auth_service(request: Request) -> AuthService:
    return runtime_of(request).auth


async def get_product_service(request: Request) -> ProductService:
    return runtime_of(request).products


async def get_order_service(request: Request) -> OrderService:
    return runtime_of(request).orders


async def get_refund_service(request: Request) -> RefundService:
    return runtime_of(request).refunds


async def get_webhook_service(request: Request) -> WebhookService:
    return runtime_of(request).webhooks


async def get_client_ip(request: Request) -> str:
    """The caller's address, through trusted proxies only (``app.netutil.client_ip``)."""
    return client_ip(request, runtime_of(request).settings.trusted_proxies)


OperationsServiceDep = Annotated[OperationsService, Depends(get_operations_service)]
ClientIpDep = Annotated[str, Depends(get_client_ip)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]
ProductServiceDep = Annotated[ProductService, Depends(get_product_service)]
OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]
RefundServiceDep = Annotated[RefundService, Depends(get_refund_service)]
WebhookServiceDep = Annotated[WebhookService, Depends(get_webhook_service)]


class _SessionBearer(HTTPBearer):
    """The bearer token and the user it belongs to, in one dependency node: every client
    route needs the user, and FastAPI resolves each node on every request. Still FastAPI's
    ``HTTPBearer``, so /docs shows the scheme and sends the token."""

    async def __call__(self, request: Request) -> CurrentUser:  # type: ignore[override]
        credentials = await super().__call__(request)
        if credentials is None or not credentials.credentials:
            raise SessionMissing()
        return await runtime_of(request).auth.current_user(credentials.credentials)


_session_bearer = _SessionBearer(
    scheme_name="HTTPBearer", auto_error=False, description="The token from /api/v1/auth/login."
)
CurrentUserDep = Annotated[CurrentUser, Depends(_session_bearer)]


async def require_admin(
    settings: SettingsDep,
    x_admin_token: Annotated[str | None, Header(description="WXPAY_ADMIN_TOKEN")] = None,
) -> None:
    expected = settings.admin_token.get_secret_value().encode()
    if x_admin_token is None or not hmac.compare_digest(x_admin_token.encode(), expected):
        raise AdminForbidden()


AdminDep = Depends(require_admin)
