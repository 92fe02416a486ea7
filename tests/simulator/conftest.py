from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from app.simulator.v3keys import DevMaterial, generate_dev_material
from tests.hermetic import hermetic_settings
from tests.plugins.simulator import start_simulator
from tests.simulator.helpers import Merchant, NotifyReceiver, fast_config, running_merchant
from tests.simulator.v3helpers import V3Simulator


@pytest.fixture
def receiver() -> NotifyReceiver:
    return NotifyReceiver()


@pytest.fixture
async def merchant(receiver: NotifyReceiver) -> AsyncIterator[Merchant]:
    """An in-process simulator (notify retries at 1/10 000 speed) and a client for it."""
    async with running_merchant(receiver, fast_config()) as merchant:
        yield merchant


# RSA-2048 keys take 50-100 ms each: generated once per session (``v3_material``, public-key
# mode, is shared by every directory: tests/conftest.py).
@pytest.fixture(scope="session")
def v3_certificate_material() -> DevMaterial:
    """Certificate mode with two platform certificates, so a test can rotate."""
    return generate_dev_material(hermetic_settings().mch_id, certificates=2)


def _running(material: DevMaterial) -> Iterator[V3Simulator]:
    handle, server = start_simulator(hermetic_settings(), v3=material.config)
    try:
        yield V3Simulator(handle, material)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def v3_server(v3_material: DevMaterial) -> Iterator[V3Simulator]:
    yield from _running(v3_material)


@pytest.fixture(scope="session")
def v3_certificate_server(v3_certificate_material: DevMaterial) -> Iterator[V3Simulator]:
    yield from _running(v3_certificate_material)


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for the v3 tests' own requests (one: each costs ~20 ms to make)."""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        yield client


@pytest.fixture
async def v3_simulator(v3_server: V3Simulator) -> AsyncIterator[V3Simulator]:
    """A simulator over real HTTP serving v2 and v3 (public-key mode), reset for the test."""
    await v3_server.handle.reset()
    yield v3_server


@pytest.fixture
async def v3_certificate_simulator(
    v3_certificate_server: V3Simulator,
) -> AsyncIterator[V3Simulator]:
    """The same in certificate mode, reset (the first certificate signs again)."""
    await v3_certificate_server.handle.reset()
    yield v3_certificate_server
