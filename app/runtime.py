"""What the lifespan builds once and every request shares."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.service import AuthKeys, AuthService
from app.config import Settings
from app.db import PgPool
from app.orders.service import OrderService
from app.payments.service import PaymentService
from app.refunds.notify import RefundNotifies
from app.refunds.service import RefundService
from app.security import SecretBox, derive_key
from app.wechat.client import WeChatPayClient
from app.wechat.miniprogram import MiniProgramClient


@dataclass(slots=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    miniprogram: MiniProgramClient
    pay: WeChatPayClient
    payments: PaymentService
    auth: AuthService
    orders: OrderService
    refunds: RefundService
    refund_notifies: RefundNotifies
    pool: PgPool | None
    schema_head: str | None


def build_auth_keys(settings: Settings) -> AuthKeys:
    secret = settings.secret_key.get_secret_value()
    return AuthKeys(
        token_key=derive_key(secret, "wxpay bearer-token hash v1"),
        box=SecretBox(derive_key(secret, "wxpay session_key at rest v1")),
        ttl_seconds=settings.session_ttl_seconds,
    )
