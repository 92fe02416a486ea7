"""pytest plugin: the local WeChat simulator as a real HTTP server on loopback.

``simulator`` (session scope) starts ``app.simulator`` under uvicorn on 127.0.0.1 with a free
port, in a background thread with its own event loop, and yields a ``SimulatorHandle``. Its
merchant has the development defaults (``hermetic_settings()``: no ``WXPAY_*``, no ``.env``);
notify retries run at ``TEST_TIME_FACTOR`` of WeChat's schedule (15 s -> 15 ms).
``fresh_simulator`` is the same handle, reset before the test.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from app.config import Settings
from app.simulator import SimulatorConfig, create_simulator_app
from tests.hermetic import hermetic_settings

TEST_TIME_FACTOR = 0.001
TEST_NOTIFY_TIMEOUT = 1.0


@dataclass(frozen=True)
class SimulatorHandle:
    """The control API of a running simulator, as awaitable methods."""

    base_url: str
    settings: Settings
    config: SimulatorConfig
    # What the control client trusts: an SSL context when the simulator is served over TLS.
    verify: ssl.SSLContext | bool = True

    def url(self, path: str) -> str:
        return self.base_url + path

    async def _call(self, method: str, path: str, json: object = None) -> Any:
        verify = _default_tls() if self.verify is True else self.verify
        async with httpx.AsyncClient(
            base_url=self.base_url, trust_env=False, verify=verify
        ) as http:
            response = await http.request(method, path, json=json)
        response.raise_for_status()
        return response.json()

    async def login_code(self, openid: str | None = None) -> tuple[str, str]:
        """What ``wx.login`` would give: ``(code, openid)``; a new openid unless one is given."""
        body = await self._call("POST", "/_control/login-code", {"openid": openid})
        return body["code"], body["openid"]

    async def pay(self, prepay_id: str, result: str = "SUCCESS") -> dict[str, Any]:
        """The user paying (``SUCCESS``), failing (``FAIL``) or cancelling (``CANCEL``)."""
        payload = {"prepay_id": prepay_id, "result": result}
        answer: dict[str, Any] = await self._call("POST", "/_control/pay", payload)
        return answer

    async def notifies(self) -> list[dict[str, Any]]:
        """Every delivery attempt so far, oldest first, with the reply and verdict."""
        attempts: list[dict[str, Any]] = await self._call("GET", "/_control/notifies")
        return attempts

    async def wait_for_notifies(
        self, count: int = 1, *, within: float = 5.0, verdict: str | None = None
    ) -> list[dict[str, Any]]:
        """Poll until ``count`` attempts (with ``verdict``, if given) have finished."""
        deadline = time.monotonic() + within
        while True:
            done = [a for a in await self.notifies() if a["verdict"] != "pending"]
            matching = [a for a in done if verdict is None or a["verdict"] == verdict]
            if len(matching) >= count or time.monotonic() > deadline:
                return matching
            await asyncio.sleep(0.01)

    async def orders(self) -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = await self._call("GET", "/_control/orders")
        return orders

    async def set_fault(self, name: str, **options: Any) -> dict[str, Any]:
        """Turn on a fault switch (see ``app.simulator.faults``); returns it with its id."""
        fault: dict[str, Any] = await self._call(
            "POST", "/_control/faults", {"name": name, **options}
        )
        return fault

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_control/faults")

    async def advance_clock(self, seconds: float) -> None:
        await self._call("POST", "/_control/clock", {"advance_seconds": seconds})

    async def set_latency(self, latency_ms: float) -> None:
        await self._call("POST", "/_control/latency", {"latency_ms": latency_ms})

    async def v3_keys(self) -> dict[str, Any]:
        """WeChat Pay's public v3 material: mode, signing serial, public key, certificates."""
        keys: dict[str, Any] = await self._call("GET", "/_control/v3/keys")
        return keys

    async def rotate_certificate(self) -> dict[str, Any]:
        """Certificate mode: WeChat Pay signs with its next platform certificate from now on."""
        keys: dict[str, Any] = await self._call("POST", "/_control/v3/rotate-certificate")
        return keys

    async def reset(self) -> None:
        """Forget users, orders, refunds, deliveries and faults; the clock returns to now."""
        await self._call("POST", "/_control/reset")


@functools.cache
def _default_tls() -> ssl.SSLContext:
    # httpx builds (and loads CA files into) a context per client, ~20 ms: the handle makes a
    # client per call and polls, so it shares one.
    return ssl.create_default_context()


class ServerThread:
    """A uvicorn server for ``app`` on a free loopback port, in a daemon thread; ``options``
    go to ``uvicorn.Config`` (``ssl_*`` for HTTPS)."""

    def __init__(self, app: Any, **options: Any) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
            **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="simulator", daemon=True)

    def start(self, timeout: float = 10.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulator server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if self.server.config.is_ssl else "http"
        return f"{scheme}://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def simulator_config(settings: Settings, **overrides: Any) -> SimulatorConfig:
    """The simulator for ``settings``' merchant, its waits scaled down for tests."""
    options = {"time_factor": TEST_TIME_FACTOR, "notify_timeout": TEST_NOTIFY_TIMEOUT, **overrides}
    return SimulatorConfig.from_settings(settings, **options)


def start_simulator(settings: Settings, **overrides: Any) -> tuple[SimulatorHandle, ServerThread]:
    """A running simulator for ``settings``' merchant; stop it with ``ServerThread.stop``."""
    config = simulator_config(settings, **overrides)
    server = ServerThread(create_simulator_app(config))
    base_url = server.start()
    return SimulatorHandle(base_url=base_url, settings=settings, config=config), server


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorHandle]:
    handle, server = start_simulator(hermetic_settings())
    try:
        yield handle
    finally:
        server.stop()


@pytest.fixture
async def fresh_simulator(simulator: SimulatorHandle) -> AsyncIterator[SimulatorHandle]:
    await simulator.reset()
    yield simulator
