"""The example receiver (examples/webhook_receiver.py) over real HTTP, behind switchable
faults: down (nothing listens on its port), a share of 5xx answers, slow answers."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from examples.webhook_receiver import EventLog, make_app, verify_signature


@dataclass
class Faults:
    error_ratio: float = 0.0  # this share of answers is a 503, at random
    fail_next: int = 0  # the next this many answers are 503s
    delay_seconds: float = 0.0  # answer only after this long
    seed: int = 13
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def error_now(self) -> bool:
        if self.fail_next > 0:
            self.fail_next -= 1
            return True
        return self._random.random() < self.error_ratio


@dataclass
class Seen:
    """Every request that reached the receiver, raw, and the peak of requests open at once."""

    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    open_now: int = 0
    peak_open: int = 0


class FaultyReceiver:
    def __init__(self, app: ASGIApp, faults: Faults, seen: Seen) -> None:
        self._app, self._faults, self._seen = app, faults, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self._app(scope, receive, send)
        seen = self._seen
        seen.open_now += 1
        seen.peak_open = max(seen.peak_open, seen.open_now)
        try:
            body = await _read(receive)
            if body is None:
                return None  # the sender died mid-request (kill -9): nothing arrived whole
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            seen.requests.append((headers, body))
            await asyncio.sleep(self._faults.delay_seconds)
            if self._faults.error_now():
                await _answer(send, 503)
                return None
            return await self._app(scope, _replay(body), send)
        finally:
            seen.open_now -= 1


async def _read(receive: Receive) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _replay(body: bytes) -> Receive:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _answer(send: Send, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"unavailable"})


class ReceiverServer:
    """Listens on one fixed port across stops and starts, so the endpoint URL stays valid."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.log = EventLog()
        self.faults = Faults()
        self.seen = Seen()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}/webhooks"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def app(self) -> ASGIApp:
        # ``secrets`` is read per request, so a test may add the rotated secret later.
        return FaultyReceiver(make_app(self.secrets, self.log), self.faults, self.seen)

    def start(self) -> None:
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def all_signatures_verify(self) -> bool:
        """Every request that arrived, checked again here with the example's own verifier."""
        return all(
            any(verify_signature(h["wxpay-signature"], body, s) for s in self.secrets)
            for h, body in self.seen.requests
        )
