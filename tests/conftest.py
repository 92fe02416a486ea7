from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_engine
from app.httpclient import build_http_client
from app.main import create_app
from app.models import load_all_models
from app.runtime import Runtime, build_runtime
from app.simulator.v3keys import DevMaterial, generate_dev_material
from app.sweep import SweepReport
from app.wechat.client import WeChatPayClient
from tests.db import fresh_database_url, migrate, truncate_all
from tests.hermetic import hermetic_settings

pytest_plugins = ["tests.plugins.simulator", "tests.plugins.service", "tests.plugins.tls"]

load_all_models()

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]
Sweep = Callable[[], Awaitable[SweepReport]]
RuntimeFactory = Callable[..., Awaitable[Runtime]]


def pytest_report_header() -> str:
    backend = "PostgreSQL" if os.environ.get("WXPAY_TEST_DATABASE_URL") else "SQLite"
    return f"database backend: {backend}"


def with_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """``settings`` with some values replaced, validated like the environment would be."""
    return hermetic_settings(**{**dict(settings), **overrides})


@pytest.fixture(scope="session")
def v3_material() -> DevMaterial:
    """A merchant's v3 keys and WeChat Pay's, public-key mode (``PUB_KEY_ID_...``): generated
    once per session, as RSA-2048 keys take 50-100 ms each."""
    return generate_dev_material(hermetic_settings().mch_id)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with fresh_database_url() as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def _clean_database(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if "engine" in request.fixturenames:
        await truncate_all(request.getfixturevalue("engine"))


@pytest.fixture
def settings(database_url: str, fresh_simulator: Any) -> Settings:
    """Service settings pointed at the test database and the simulator over real HTTP."""
    return hermetic_settings(
        database_url=database_url,
        miniprogram_api_base=fresh_simulator.base_url,
        pay_api_base=fresh_simulator.base_url,
        simulator_mount=False,
        notify_url="http://127.0.0.1:9/wechat/pay/notify",
        refund_notify_url="http://127.0.0.1:9/wechat/pay/refund-notify",
        wechat_max_attempts=2,
        sweep_interval_seconds=0,
        webhook_poll_interval_seconds=0,
    )


@pytest.fixture
async def make_client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[ClientFactory]:
    """Start the app (lifespan included) with optional settings overrides; closed at teardown."""
    async with AsyncExitStack() as stack:

        async def factory(
            transport: httpx.AsyncBaseTransport | None = None, **overrides: Any
        ) -> httpx.AsyncClient:
            app: FastAPI = create_app(with_overrides(settings, overrides), transport=transport)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            return await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://service.test")
            )

        yield factory


@pytest.fixture
async def client(make_client: ClientFactory) -> httpx.AsyncClient:
    return await make_client()


@pytest.fixture
async def pay_client(settings: Settings) -> AsyncIterator[WeChatPayClient]:
    async with build_http_client(settings) as http:
        yield WeChatPayClient.from_settings(settings, http)


@pytest.fixture
async def make_runtime(settings: Settings) -> AsyncIterator[RuntimeFactory]:
    """The service as the composition root builds it, without HTTP routes (sweeps, CLI-like
    use), with optional settings overrides; closed at teardown."""
    async with AsyncExitStack() as stack:

        async def factory(**overrides: Any) -> Runtime:
            return await build_runtime(with_overrides(settings, overrides), stack)

        yield factory


@pytest.fixture
async def sweep(make_runtime: RuntimeFactory) -> Sweep:
    """One sweep pass over the test database, talking to the simulator."""
    return (await make_runtime()).sweeper.sweep_once
