"""Reliability scenarios: PostgreSQL, several server processes, the simulator misbehaving."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.plugins.cluster import ServiceProcess, running_services
from tests.plugins.simulator import SimulatorHandle
from tests.reliability.scenario import load_client

StartServices = Callable[..., list[ServiceProcess]]


@pytest.fixture
def pg_database_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip(
            "reliability scenarios run on PostgreSQL: set WXPAY_TEST_DATABASE_URL "
            "(make test-reliability does)"
        )
    return database_url


@pytest.fixture
def start_services(
    pg_database_url: str, fresh_simulator: SimulatorHandle, tmp_path: Path
) -> Iterator[StartServices]:
    """Start ``count`` separate service processes (``workers`` each) on the test database,
    pointed at the simulator; ``env`` adds ``WXPAY_*`` settings. Stopped at teardown."""
    with ExitStack() as stack:

        def start(count: int = 2, workers: int = 1, **env: Any) -> list[ServiceProcess]:
            return stack.enter_context(
                running_services(
                    pg_database_url,
                    fresh_simulator.base_url,
                    tmp_path,
                    count=count,
                    workers=workers,
                    env={k: str(v) for k, v in env.items()},
                )
            )

        yield start


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with load_client(50) as client:
        yield client
