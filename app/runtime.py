"""The composition root: settings in, the whole service out.

The lifespan, the CLI and the tests all build the service here, so none of them can wire a part
differently (a sweep from the CLI sends refunds with the merchant certificate exactly as the
server's own sweep does).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from alembic.config import Config
from alembic.script import ScriptDirectory
from pydantic import SecretStr

from app.adapters.v3setup import V3ConfigError, build_v3_gateway
from app.adapters.wechatpay_v2 import WeChatPayV2Gateway
from app.auth.service import AuthKeys, AuthService, LoginLimits
from app.auth.sessioncache import SessionCache, SessionFreshness
from app.config import Settings
from app.eventdata import render_data
from app.events.service import WebhookService
from app.events.urls import delivery_transport
from app.events.worker import DeliveryWorker
from app.gateway import ApiVersion, Gateways, PaymentGateway
from app.httpclient import InProcessRoute, build_http_client, tls_context
from app.inbound import Refusals
from app.metered_gateway import MeteredGateway
from app.operations import OperationsService
from app.orders.service import OrderService
from app.payments.notify import PaymentNotifies
from app.payments.service import PaymentService
from app.products.service import ProductService
from app.ratelimits.service import Limit, RateLimiter
from app.refunds.notify import RefundNotifies
from app.refunds.service import RefundService
from app.security import SecretBox, derive_key
from app.sweep import Sweeper
from app.uow import Database, open_database
from app.wechat.client import WeChatPayClient, merchant_cert
from app.wechat.miniprogram import MiniProgramClient

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from app.simulator.v3keys import V3Config


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the lifespan builds once and every request shares."""

    settings: Settings
    db: Database
    gateways: Gateways
    auth: AuthService
    session_freshness: SessionFreshness
    products: ProductService
    payments: PaymentService
    payment_notifies: PaymentNotifies
    orders: OrderService
    refunds: RefundService
    refund_notifies: RefundNotifies
    sweeper: Sweeper
    webhooks: WebhookService
    deliveries: DeliveryWorker
    operations: OperationsService
    schema_head: str | None


async def build_runtime(
    settings: Settings,
    stack: AsyncExitStack,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    in_process: InProcessRoute | None = None,
    db: Database | None = None,
) -> Runtime:
    """Open the pool and the HTTP clients and build every service; ``stack`` closes them.

    ``transport`` replaces the network under the WeChat clients (tests); calls under
    ``in_process`` are answered by an app in this process (the dev simulator mount); ``db``
    is a database the caller opened and closes (a benchmark that instruments its engine)."""
    if db is None:
        db = await open_database(settings.database_url, pool_size=settings.database_pool_size)
        stack.push_async_callback(db.close)
    http = build_http_client(settings, transport=transport, in_process=in_process)
    stack.push_async_callback(http.aclose)
    refund_http = _merchant_tls_client(settings, transport, in_process)
    if refund_http is not None:
        stack.push_async_callback(refund_http.aclose)
    pay = WeChatPayClient.from_settings(settings, http, refund_http=refund_http)
    miniprogram = MiniProgramClient(
        http, api_base=settings.miniprogram_api, appid=settings.appid, secret=settings.app_secret
    )
    gateways = _gateways(settings, pay, build_v3_gateway(settings, http))
    payments = PaymentService(db)
    limiter = RateLimiter(db)
    orders = OrderService(db, settings, gateways, payments, limiter)
    refunds = RefundService(db, settings, gateways)
    refusals = Refusals(
        db, limiter, settings.refused_notifies_per_source_per_minute, settings.trusted_proxies
    )
    webhooks = WebhookService(db, settings, webhook_box(settings), render_data)
    sessions = SessionCache(settings.session_cache_seconds)
    head = schema_head()
    return Runtime(
        settings=settings,
        db=db,
        gateways=gateways,
        auth=AuthService(
            db, build_auth_keys(settings), miniprogram, limiter, _login_limits(settings), sessions
        ),
        session_freshness=SessionFreshness(db, sessions),
        products=ProductService(db),
        payments=payments,
        payment_notifies=PaymentNotifies(gateways, payments, refusals),
        orders=orders,
        refunds=refunds,
        refund_notifies=RefundNotifies(gateways, db, refusals),
        sweeper=Sweeper(db, settings, orders, refunds, limiter),
        webhooks=webhooks,
        deliveries=await _delivery_worker(settings, stack, db, webhooks),
        operations=OperationsService(db, head, settings.metrics_token),
        schema_head=head,
    )


async def warn_of_stranded_v2_orders(runtime: Runtime) -> int:
    """Under v3 without the APIv2 key, v2 orders can be neither queried nor refunded: said at
    start-up when some are still unpaid or refunding, since each will need the key again.
    Returns how many there are."""
    if runtime.gateways.configured(ApiVersion.V2) is not None:
        return 0
    async with runtime.db.statement() as tx:
        orders = await tx.orders.count_payable(ApiVersion.V2)
        refunds = await tx.refunds.count_open(ApiVersion.V2)
    if orders or refunds:
        logger.warning(
            "%d unpaid v2 orders and %d v2 refunds in flight cannot be queried, closed or "
            "refunded without the APIv2 key: set WXPAY_API_KEY until they are settled",
            orders,
            refunds,
        )
    return orders + refunds


def _login_limits(settings: Settings) -> LoginLimits:
    return LoginLimits(
        per_ip=Limit(settings.login_rate_per_ip_per_minute),
        overall=Limit(settings.login_rate_per_minute),
    )


def _gateways(settings: Settings, pay: WeChatPayClient, v3: PaymentGateway | None) -> Gateways:
    """Both versions when both are configured: new orders use ``WXPAY_API_VERSION``, and every
    order keeps the version it was created with. Each is timed for ``/metrics``."""
    v2: PaymentGateway = WeChatPayV2Gateway(
        pay, notify_url=settings.pay_notify_url, refund_notify_url=settings.refund_notify_address
    )
    v2, v3 = MeteredGateway(v2), None if v3 is None else MeteredGateway(v3)
    if settings.api_version == "v3":
        if v3 is None:
            raise V3ConfigError("WXPAY_API_VERSION=v3 needs " + ", ".join(settings.v3_missing))
        return Gateways(v3, v2) if settings.v2_key_set else Gateways(v3)
    return Gateways(v2) if v3 is None else Gateways(v2, v3)


def _merchant_tls_client(
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None,
    in_process: InProcessRoute | None,
) -> httpx.AsyncClient | None:
    # Refunds need the merchant certificate (mutual TLS); only when it is configured.
    cert = merchant_cert(settings)
    if cert is None:
        return None
    return build_http_client(settings, transport=transport, cert=cert, in_process=in_process)


def build_auth_keys(settings: Settings) -> AuthKeys:
    secret = settings.secret_key.get_secret_value()
    return AuthKeys(
        token_key=derive_key(secret, "wxpay bearer-token hash v1"),
        box=SecretBox(derive_key(secret, "wxpay session_key at rest v1")),
        ttl_seconds=settings.session_ttl_seconds,
    )


async def _delivery_worker(
    settings: Settings, stack: AsyncExitStack, db: Database, webhooks: WebhookService
) -> DeliveryWorker:
    # Its own client: merchants' servers, not WeChat's (no test transport, no in-process
    # route), no redirects followed (a 3xx is a failed attempt, never a hop elsewhere).
    limits = httpx.Limits(max_connections=settings.http_max_connections, keepalive_expiry=30)
    http = httpx.AsyncClient(
        transport=delivery_transport(settings, tls_context(settings), limits),
        timeout=settings.webhook_timeout_seconds,
        trust_env=False,
        follow_redirects=False,
    )
    stack.push_async_callback(http.aclose)
    worker = DeliveryWorker(db, settings, webhooks, http)
    stack.push_async_callback(worker.close)  # before the client closes: sends finish first
    return worker


def webhook_box(settings: Settings) -> SecretBox:
    """Seals webhook secrets at rest: they must be read back to sign, so they are encrypted."""
    return SecretBox(derive_key(settings.secret_key.get_secret_value(), "wxpay webhook secret v1"))


ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def schema_head() -> str | None:
    """The newest alembic revision shipped with this code."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_INI.parent / "alembic"))
    return ScriptDirectory.from_config(config).get_current_head()


DEV_V3_KEYS = Path("var/dev-v3")


def with_dev_v3_keys(settings: Settings) -> tuple[Settings, V3Config | None]:
    """In dev on v3 with the simulator mounted and no v3 setting given: v3 keys generated once under
    ``var/dev-v3`` (the merchant's and the simulated WeChat Pay's), so ``WXPAY_API_VERSION=v3
    make run`` works with nothing set, and the mounted simulator's v3 side to match."""
    dev_v3 = settings.api_version == "v3" and settings.uses_simulator_mount
    if not dev_v3 or not settings.v3_untouched:
        return settings, None
    from app.simulator.v3files import MERCHANT_PRIVATE_KEY, WECHATPAY_PUBLIC_KEY, dev_material

    material, directory = dev_material(DEV_V3_KEYS, settings.mch_id, certificate_mode=False)
    dev = settings.model_copy(
        update={
            "api_v3_key": SecretStr(material.config.api_v3_key),
            "mch_private_key_path": str(directory / MERCHANT_PRIVATE_KEY),
            "mch_cert_serial_no": material.config.merchant_serial_no,
            "wechatpay_public_key_path": str(directory / WECHATPAY_PUBLIC_KEY),
            "wechatpay_public_key_id": material.wechatpay_public_key_id,
        }
    )
    return dev, material.config
