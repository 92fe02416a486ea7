"""One request-body size limit for every route, as a pure ASGI middleware.

A route that parses JSON reads the whole body into memory first, so without a limit one 50 MB
POST costs 50 MB of RAM per request in flight. The limit is enforced twice: a declared
``Content-Length`` over it is answered at once, without reading a byte, and the streamed body
is counted as it arrives, so a chunked request with no ``Content-Length`` is stopped at the
limit too. The rest of the body is then read and thrown away for a moment before the answer
(memory stays flat): a client that writes its whole request before reading, as most do, would
otherwise meet a reset connection instead of the 413. WeChat's notify URLs keep their own,
smaller limit and their XML replies (``app.inbound``), so their prefix is left to them.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response

BODY_TOO_LARGE = "BODY_TOO_LARGE"
# How long an over-limit body is drained before the 413 is sent and the connection closed.
DRAIN_SECONDS = 2.0


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the streamed body passes the limit. An ``HTTPException``
    so that FastAPI's body reading passes it on instead of calling it a parse error (400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body exceeds {max_bytes} bytes.")


class BodySizeLimit:
    """Answer 413 ``BODY_TOO_LARGE`` (the error envelope) for a body over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        declared, chunked = _framing(scope)
        if declared is not None and declared > self.max_bytes:
            if not _expects_continue(scope):  # else the client waits for us: nothing to drain
                await _drain(receive)
            await self._refuse(scope, receive, send)
            return
        if declared is not None and not chunked:
            # The server delivers no more than a declared length (the HTTP parser frames the
            # body by it): nothing to count. The usual JSON request takes this path.
            await self.app(scope, receive, send)
            return
        await _LimitedRequest(self, scope, receive, send).run()

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"The request body exceeds {self.max_bytes} bytes."
        response = error_response(413, BODY_TOO_LARGE, message)
        response.headers["Connection"] = "close"  # the rest of the body is never read
        await response(scope, receive, send)


class _LimitedRequest:
    """One request whose body is counted as the app reads it."""

    def __init__(self, limit: BodySizeLimit, scope: Scope, receive: Receive, send: Send) -> None:
        self.limit, self.scope, self.receive, self.send = limit, scope, receive, send
        self.received = 0
        self.exceeded = False
        self.started = False

    async def run(self) -> None:
        try:
            await self.limit.app(self.scope, self._receive, self._send)
        except Exception:
            # The app may let the limit's exception (or what it made of it) escape.
            if not self.exceeded or self.started:
                raise
        if self.exceeded and not self.started:
            await _drain(self.receive)
            await self.limit._refuse(self.scope, self._receive_nothing, self.send)

    async def _receive(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_bytes:
                self.exceeded = True
                raise BodyTooLarge(self.limit.max_bytes)
        return message

    async def _send(self, message: Message) -> None:
        if self.exceeded and not self.started:
            return  # whatever the app answered, the answer is our 413, sent by run()
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)

    async def _receive_nothing(self) -> Message:
        return {"type": "http.disconnect"}


async def _drain(receive: Receive) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return


def _expects_continue(scope: Scope) -> bool:
    return any(name == b"expect" for name, _ in scope["headers"])


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared ``Content-Length`` (None if absent; an unreadable one counts as absent,
    so the body is counted), and whether a ``Transfer-Encoding`` is given (which overrides
    any length)."""
    declared, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            declared = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked
