"""The service itself as a real HTTP server on loopback, so the simulator can post notifies.

The socket is bound before the app is built: the app's notify URL must name its own port.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from app.config import Settings
from app.main import create_app
from tests.conftest import with_overrides


class LiveServer:
    def __init__(self, build: Callable[[str], Any]) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(build(self.base_url), log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: self._server.run(sockets=[self._socket]), daemon=True
        )

    def start(self, timeout: float = 15.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.01)
        return self.base_url

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


LiveFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_live_client(settings: Settings) -> AsyncIterator[LiveFactory]:
    """Start the service under uvicorn (notify URL pointing at itself); yields a client factory."""
    servers: list[LiveServer] = []
    clients: list[httpx.AsyncClient] = []

    async def factory(**overrides: Any) -> httpx.AsyncClient:
        def build(base_url: str) -> Any:
            update = {
                "notify_url": f"{base_url}/wechat/pay/notify",
                "refund_notify_url": f"{base_url}/wechat/pay/refund-notify",
                "v3_notify_url": f"{base_url}/wechat/pay/v3/notify",
                "v3_refund_notify_url": f"{base_url}/wechat/pay/v3/refund-notify",
                **overrides,
            }
            return create_app(with_overrides(settings, update))

        server = LiveServer(build)
        servers.append(server)
        client = httpx.AsyncClient(base_url=server.start(), trust_env=False, timeout=10)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()
    for server in servers:
        server.stop()
