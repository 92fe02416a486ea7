"""Reliability scenarios: PostgreSQL, several server processes, the simulator misbehaving.

Every scenario that starts services runs on both WeChat Pay API versions: ``api_version`` is
parametrised, ``wechat`` is the simulator for it (for v3, one that also holds the merchant's v3
keys and WeChat Pay's), and ``start_services`` configures the processes for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hermetic import hermetic_settings
from tests.plugins.cluster import ServiceProcess, running_services
from tests.plugins.simulator import SimulatorHandle, start_simulator
from tests.reliability.scenario import PayVersion, load_client

StartServices = Callable[..., list[ServiceProcess]]


@pytest.fixture
def pg_database_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip(
            "reliability scenarios run on PostgreSQL: set WXPAY_TEST_DATABASE_URL "
            "(make test-reliability does)"
        )
    return database_url


@pytest.fixture(params=["v2", "v3"])
def api_version(request: pytest.FixtureRequest) -> PayVersion:
    """The WeChat Pay API version the scenario's service creates its orders with."""
    if request.param == "v2":
        return PayVersion("v2", hermetic_settings())
    return PayVersion("v3", hermetic_settings(), request.getfixturevalue("v3_material"))


@pytest.fixture
def wechat(api_version: PayVersion) -> Iterator[SimulatorHandle]:
    """A simulator of the scenario's own for ``api_version`` (on v3 it also holds the
    merchant's v3 keys and WeChat Pay's, public-key mode, and speaks v2 beside v3).

    Not the session's: a storm leaves thousands of notify deliveries that timed out, and a
    simulator reset after one went on timing out every delivery of the next scenario (840 of
    840 in a refund storm), so no scenario inherits another's simulator."""
    v3 = api_version.material.config if api_version.material is not None else None
    handle, server = start_simulator(hermetic_settings(), v3=v3)
    try:
        yield handle
    finally:
        server.stop()


@pytest.fixture
def start_services(
    pg_database_url: str, wechat: SimulatorHandle, api_version: PayVersion, tmp_path: Path
) -> Iterator[StartServices]:
    """Start ``count`` separate service processes (``workers`` each) on the test database,
    pointed at the simulator and configured for ``api_version`` (v3 key files under
    ``tmp_path``); ``env`` adds ``WXPAY_*`` settings. Stopped at teardown."""
    version_env = api_version.service_env(tmp_path / "v3-keys", wechat.base_url)
    with ExitStack() as stack:

        def start(count: int = 2, workers: int = 1, **env: Any) -> list[ServiceProcess]:
            return stack.enter_context(
                running_services(
                    pg_database_url,
                    wechat.base_url,
                    tmp_path,
                    count=count,
                    workers=workers,
                    env={**version_env, **{k: str(v) for k, v in env.items()}},
                )
            )

        yield start


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with load_client(50) as client:
        yield client
