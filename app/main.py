"""The ASGI application: ``app.main:app``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import httpx
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from app.auth.router import router as auth_router
from app.auth.service import AuthService
from app.config import Settings, get_settings
from app.db import create_engine, create_sessionmaker, open_pg_pool
from app.errors import install_error_handlers
from app.health import router as health_router
from app.health import schema_head
from app.httpclient import build_http_client
from app.logging_setup import configure_logging
from app.orders.router import admin_router as orders_admin_router
from app.orders.router import router as orders_router
from app.orders.service import OrderService
from app.orders.sweeper import run_sweeper
from app.payments.router import router as payments_router
from app.payments.service import PaymentService, asyncpg_transaction, sqlalchemy_transaction
from app.products.router import admin_router as products_admin_router
from app.products.router import router as products_router
from app.refunds.notify import RefundNotifies
from app.refunds.router import admin_router as refunds_admin_router
from app.refunds.router import notify_router as refund_notify_router
from app.refunds.service import RefundService
from app.runtime import Runtime, build_auth_keys
from app.wechat.client import WeChatPayClient
from app.wechat.miniprogram import MiniProgramClient

if TYPE_CHECKING:
    from app.simulator import Simulator

logger = logging.getLogger(__name__)


async def build_runtime(
    settings: Settings, stack: AsyncExitStack, transport: httpx.AsyncBaseTransport | None
) -> Runtime:
    """Create the shared resources; ``stack`` closes them at shutdown."""
    engine = create_engine(settings.database_url)
    stack.push_async_callback(engine.dispose)
    http = build_http_client(settings, transport=transport)
    stack.push_async_callback(http.aclose)
    refund_http = _refund_http_client(settings, transport)
    if refund_http is not None:
        stack.push_async_callback(refund_http.aclose)
    pool = await open_pg_pool(engine, settings.database_url)
    if pool is not None:
        stack.push_async_callback(pool.close)
    payments = PaymentService(
        sqlalchemy_transaction(engine) if pool is None else asyncpg_transaction(pool)
    )
    pay = WeChatPayClient.from_settings(settings, http, refund_http=refund_http)
    return Runtime(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        http=http,
        miniprogram=MiniProgramClient(
            http,
            api_base=settings.miniprogram_api,
            appid=settings.appid,
            secret=settings.app_secret,
        ),
        pay=pay,
        payments=payments,
        auth=AuthService(engine, build_auth_keys(settings), pool),
        orders=OrderService(engine, settings, pay, payments, pool),
        refunds=RefundService(engine, settings, pay),
        refund_notifies=RefundNotifies(engine, pay),
        pool=pool,
        schema_head=schema_head(),
    )


def _refund_http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient | None:
    # Refunds need the merchant certificate (mutual TLS); only when it is configured.
    if not (settings.mch_cert_path and settings.mch_key_path):
        return None
    cert = (settings.mch_cert_path, settings.mch_key_path)
    return build_http_client(settings, transport=transport, cert=cert)


@asynccontextmanager
async def _background(
    coro_factory: Callable[[], Coroutine[Any, Any, None]], enabled: bool
) -> AsyncIterator[None]:
    task = asyncio.create_task(coro_factory()) if enabled else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def create_app(
    settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The service. ``transport`` replaces the network under the WeChat clients (tests)."""
    settings = settings or get_settings()
    settings.check_production()
    simulator = _dev_simulator(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        async with AsyncExitStack() as stack:
            if simulator is not None:
                await stack.enter_async_context(simulator)
            runtime = await build_runtime(settings, stack, transport)
            app.state.runtime = runtime
            await stack.enter_async_context(
                _background(
                    lambda: run_sweeper(runtime.engine, settings, runtime.pay, runtime.payments),
                    settings.sweep_interval_seconds > 0,
                )
            )
            logger.info("started env=%s pay_api=%s", settings.env.value, settings.pay_api)
            yield

    app = FastAPI(
        title="WeChat mini-program payments",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=_telemetry(settings.telemetry),
        description="Login, orders and WeChat Pay for mini-programs. Every error is "
        '`{"error": {"code", "message"}}`; the notify URL answers in WeChat\'s XML.',
    )
    install_error_handlers(app)
    for router in (
        health_router,
        auth_router,
        products_router,
        products_admin_router,
        orders_router,
        orders_admin_router,
        refunds_admin_router,
        payments_router,
        refund_notify_router,
    ):
        app.include_router(router)
    if simulator is not None:
        app.mount("/sim", simulator.app)
    return app


def _telemetry(enabled: bool) -> TelemetryConfig:
    switches = ("tracing", "metrics", "logs", "operation_spans")
    return cast(TelemetryConfig, dict.fromkeys(switches, enabled))


def _dev_simulator(settings: Settings) -> Simulator | None:
    """The WeChat simulator mounted at /sim in development; never in production."""
    if not settings.uses_simulator_mount:
        return None
    from app.simulator import Simulator, SimulatorConfig

    return Simulator(SimulatorConfig.from_settings(settings))


app = create_app()
