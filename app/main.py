"""The ASGI application: ``app.main:app``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import httpx
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from app.auth.router import admin_router as auth_admin_router
from app.auth.router import router as auth_router
from app.bodylimit import BodySizeLimit
from app.config import Settings, get_settings
from app.devmount import AllowedHostsTransport, mount_lock, notify_targets
from app.docs import install_offline_docs
from app.errors import install_error_handlers
from app.events.router import router as events_router
from app.health import router as health_router
from app.httpclient import InProcessRoute, InProcessTransport
from app.leanroute import LEAN_ROUTES_STATE
from app.logging_setup import configure_logging
from app.observe import RequestObserver
from app.observe import router as metrics_router
from app.orders.router import admin_router as orders_admin_router
from app.orders.router import router as orders_router
from app.payments.router import routes as payment_notify_routes
from app.products.router import admin_router as products_admin_router
from app.products.router import router as products_router
from app.refunds.router import admin_router as refunds_admin_router
from app.refunds.router import notify_routes as refund_notify_routes
from app.runtime import build_runtime, warn_of_stranded_v2_orders, with_dev_v3_keys

if TYPE_CHECKING:
    from app.simulator import Simulator
    from app.simulator.v3keys import V3Config

logger = logging.getLogger(__name__)
# WeChat's notify URLs: their own body limit and XML replies (app.inbound).
NOTIFY_PREFIX = "/wechat/"
OPENAPI_URL = "/openapi.json"


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


@contextlib.contextmanager
def _startup_heap_frozen() -> Iterator[None]:
    """Leaves what start-up built (modules, routes, models, pools) out of the garbage
    collector's full passes while the service runs. It lives as long as the process, yet
    every full pass walked it: tens of milliseconds, every thousand or so requests
    (docs/benchmarks.md, "a frozen start-up heap"). What it costs: start-up's own garbage, and
    any start-up object that later ends in a reference cycle, waits for shutdown to be
    collected (a few hundred objects at start-up, measured). Freezing is process-wide: the
    heap is unfrozen at shutdown, so an app stopped in a longer-lived process (the tests)
    leaves nothing uncollectable, and two apps in one process unfreeze each other early,
    which only costs collection time."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def create_app(
    settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The service. ``transport`` replaces the network under the WeChat clients (tests)."""
    settings, dev_v3 = with_dev_v3_keys(settings or get_settings())
    settings.check_production()
    simulator: Simulator | None = None  # set below, once the app it notifies exists

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        async with AsyncExitStack() as stack:
            in_process = None
            if simulator is not None:
                stack.enter_context(mount_lock(settings.simulator_lock_path))
                await stack.enter_async_context(simulator)
                in_process = InProcessRoute(settings.simulator_mount_url, simulator.app)
            runtime = await build_runtime(settings, stack, transport, in_process=in_process)
            app.state.runtime = runtime
            await warn_of_stranded_v2_orders(runtime)
            await stack.enter_async_context(
                _background(runtime.sweeper.run_forever, settings.sweep_interval_seconds > 0)
            )
            await stack.enter_async_context(
                _background(
                    runtime.deliveries.run_forever, settings.webhook_poll_interval_seconds > 0
                )
            )
            await stack.enter_async_context(
                _background(
                    runtime.session_freshness.run_forever, settings.session_cache_seconds > 0
                )
            )
            logger.info("started env=%s pay_api=%s", settings.env.value, settings.pay_api)
            with _startup_heap_frozen():
                yield

    app = FastAPI(
        title="WeChat mini-program payments",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=_telemetry(settings.telemetry),
        description="Login, orders and WeChat Pay for mini-programs. Every error is "
        '`{"error": {"code", "message"}}`; the notify URL answers in WeChat\'s XML.',
        # Nowhere in production unless WXPAY_DOCS=true: they list the admin routes. The pages
        # themselves are ours (app.docs): FastAPI's load their scripts from a CDN.
        openapi_url=OPENAPI_URL if settings.serves_docs else None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, exempt_prefixes=(NOTIFY_PREFIX,)
    )
    # Added last, so outermost: its timings and request id cover a 413 too.
    app.add_middleware(RequestObserver, timed=settings.metrics, access_log=settings.access_log)
    # Busiest first: every request is matched against the routes in this order, and the
    # notifies, the orders and the login are most of the traffic (no two share a path).
    app.router.routes.extend([*payment_notify_routes, *refund_notify_routes])
    setattr(app.state, LEAN_ROUTES_STATE, settings.lean_routes)
    _include_routers(app, settings)
    if settings.serves_docs:
        install_offline_docs(app, OPENAPI_URL)  # after the API: matched after it, too
    simulator = _dev_simulator(settings, app, dev_v3)
    if simulator is not None:
        app.mount("/sim", simulator.app)
    return app


def _include_routers(app: FastAPI, settings: Settings) -> None:
    for router in (
        orders_router,
        auth_router,
        products_router,
        health_router,
        auth_admin_router,
        products_admin_router,
        orders_admin_router,
        refunds_admin_router,
        events_router,
    ):
        app.include_router(router)
    if settings.metrics:
        app.include_router(metrics_router)  # last: every request is matched against it


def _telemetry(enabled: bool) -> TelemetryConfig:
    switches = ("tracing", "metrics", "logs", "operation_spans")
    return cast(TelemetryConfig, dict.fromkeys(switches, enabled))


def _dev_simulator(settings: Settings, app: FastAPI, v3: V3Config | None) -> Simulator | None:
    """The WeChat simulator mounted at /sim in development; never in production.

    Its notifies to this service's address are answered by ``app`` in process, as the
    service's calls to the mount are (see ``build_runtime``): both ends are this process, so
    neither depends on ``WXPAY_SELF_BASE_URL`` naming the port uvicorn was really given. It
    notifies no other host unless ``WXPAY_SIMULATOR_NOTIFY_HOSTS`` lists it, and only one
    process may serve it (``app.devmount``).
    """
    if not settings.uses_simulator_mount:
        return None
    from app.simulator import Simulator, SimulatorConfig

    network = AllowedHostsTransport(httpx.AsyncHTTPTransport(), notify_targets(settings))
    to_service = InProcessTransport(InProcessRoute(settings.self_base_url, app), network)
    config = SimulatorConfig.from_settings(settings, v3=v3)
    return Simulator(config, notify_transport=to_service)


app = create_app()
