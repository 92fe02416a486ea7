"""What an operator sees of each request: its id, its access line, its latency, ``/metrics``.

``RequestObserver`` is plain ASGI (no ``BaseHTTPMiddleware``, which costs a task and a queue per
request): it takes the caller's ``X-Request-ID`` when it is a sane token, or makes one, returns
it in the response, and keeps it in ``REQUEST_ID`` while the request runs, so every log line the
request causes carries it. With metrics on, it times the request by route template and status.

It also writes the request's access line (logger ``app.access``, INFO), once the answer is
sent, and reports in it the WeChat calls the request made, so an order writes one log line,
not two (each cost ~50 us of CPU in place here, docs/benchmarks.md). uvicorn's own access
line (``uvicorn.access``, switched off by ``configure_logging``) had no request id and no
duration.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import re
import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import Histogram
from pydantic import SecretStr
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.deps import OperationsServiceDep
from app.errors import Unauthorized
from app.logging_setup import ACCESS_LOGGER, REQUEST_ID, REQUEST_NOTES, RequestNotes

REQUEST_ID_HEADER = "x-request-id"
# A caller's id is logged as given, so only a short token of safe characters is taken; anything
# else (a newline, a JSON fragment) is replaced by an id of ours.
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


_access_logger = logging.getLogger(ACCESS_LOGGER)


class RequestObserver:
    def __init__(self, app: ASGIApp, *, timed: bool, access_log: bool = True) -> None:
        self._app = app
        self._timed = timed
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = _request_id(scope)
        status = 500  # if the app fails before it answers, the server answers 500
        root_path = scope.get("root_path", "")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        notes = self._notes()
        # Read before the app runs: a mount rewrites the scope on the way in.
        target = _target(scope) if notes is not None else ""
        id_token, notes_token = REQUEST_ID.set(request_id), REQUEST_NOTES.set(notes)
        started = time.perf_counter()
        try:
            await self._app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if self._timed:
                _timer(scope["method"], route_template(scope, root_path), status).observe(elapsed)
            if notes is not None:
                notes.open = False
                _log_access(scope, target, status, elapsed, notes)
            REQUEST_NOTES.reset(notes_token)
            REQUEST_ID.reset(id_token)

    def _notes(self) -> RequestNotes | None:
        """Notes for the access line, or None when no line will be written."""
        if self._access_log and _access_logger.isEnabledFor(logging.INFO):
            return RequestNotes()
        return None


def _target(scope: Scope) -> str:
    """The path and query as the client sent them (still percent-encoded)."""
    raw: bytes | None = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _log_access(
    scope: Scope, target: str, status: int, seconds: float, notes: RequestNotes
) -> None:
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else "-"
    duration_ms = round(seconds * 1000, 1)
    method = scope["method"]
    extra = {"method": method, "path": target, "status": status, "duration_ms": duration_ms}
    # uvicorn's layout (client, request line, status) with the time taken, then
    # the WeChat calls the request made. Built here, once: a message with arguments is joined
    # again by every filter and formatter that reads it.
    line = (
        f'{address} - "{method} {target} HTTP/{scope.get("http_version", "1.1")}" {status} '
        f"{duration_ms:.1f} ms"
    )
    if notes.wechat_calls:
        extra["wechat_calls"] = notes.wechat_calls
        line += "; WeChat " + ", ".join(
            f"{call['api']}: {call['outcome']} in {call['duration_ms']} ms"
            for call in notes.wechat_calls
        )
    _access_logger.info(line, extra=extra)


# Methods a client can name are unbounded; anything else is counted as OTHER.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _timer(method: str, route: str, status: int) -> Histogram:
    """The labelled histogram (``metrics.child``: bounded, as routes are templates and
    methods a fixed set)."""
    method = method if method in _METHODS else "OTHER"
    return metrics.child(metrics.HTTP_REQUESTS, method, route, str(status))


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given: str = value.decode("latin-1")
            if _SANE_ID.fullmatch(given):
                return given
            break
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


# A made id need only be unique, not unguessable: a random prefix per process and a counter
# (uuid4 costs ~6 us a call here, in os.urandom).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()


def route_template(scope: Scope, root_path: str) -> str:
    """The path of the route that served the request (``/api/v1/orders/{out_trade_no}``), with
    the mount it is under (``/sim``); one label for paths no route matched, so a scanner
    cannot grow the label set."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return metrics.UNMATCHED_ROUTE
    mount: str = scope.get("root_path", "")[len(root_path) :]
    return mount + path


router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (bearer token when WXPAY_METRICS_TOKEN is set)",
    response_class=Response,
)
async def scrape(
    operations: OperationsServiceDep, authorization: Annotated[str | None, Header()] = None
) -> Response:
    _check_token(operations.metrics_token, authorization)
    figures = await operations.figures()
    return Response(metrics.render(figures), media_type=metrics.CONTENT_TYPE)


def _check_token(expected: SecretStr | None, authorization: str | None) -> None:
    if expected is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    matches = hmac.compare_digest(given.encode(), expected.get_secret_value().encode())
    if scheme.lower() != "bearer" or not matches:
        raise Unauthorized(
            "/metrics needs the bearer token WXPAY_METRICS_TOKEN", code="METRICS_TOKEN_REQUIRED"
        )
