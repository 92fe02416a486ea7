"""The one pipeline every WeChat notify goes through: bounded read, deadline, reply, and the
audit of what is refused.

A notify is acknowledged only after its effect (and its audit row) is committed: the handler
returns an outcome only after its transaction commits. Anything else (the database down, the
deadline passed) is answered so that WeChat sends the notify again, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import Scope

from app import metrics
from app.db import DATABASE_UNAVAILABLE
from app.gateway import MAX_NOTIFY_BYTES, ApiVersion, Gateways, PaymentGateway
from app.netutil import forwarded_client
from app.ratelimits.service import Limit, RateLimiter

if TYPE_CHECKING:
    from app.uow import Database

logger = logging.getLogger(__name__)

NOTIFY_NOT_PROCESSED: tuple[type[Exception], ...] = (*DATABASE_UNAVAILABLE, TimeoutError)
# WeChat waits 5 s for the answer; leave room for the network.
NOTIFY_DEADLINE_SECONDS = 4.0
# What is kept of a refused body: its digest, its length and this much of its start.
_EXCERPT = 256


@dataclass(frozen=True, slots=True)
class NotifyOutcome:
    """What a committed notify comes to."""

    acknowledged: bool  # WeChat may stop sending it
    refused: bool  # not WeChat's message about something of ours (malformed, forged, foreign)
    detail: str  # safe to send back to whoever posted it


class Notifies(Protocol):
    """What a notify route hands the pipeline: the gateways that verify a message (one per
    configured API version), and the handler that applies it."""

    @property
    def gateways(self) -> Gateways: ...

    async def handle(
        self, gateway: PaymentGateway, body: bytes, headers: Mapping[str, str], peer: str
    ) -> NotifyOutcome:
        """Apply one notify; the outcome returned is already committed."""
        ...


class NotifyRoute(Route):
    """A WeChat notify URL: a plain Starlette route, not a FastAPI one. WeChat's message format
    is fixed, so there is no schema to validate and nothing to inject, and the notify is the
    service's hot path: FastAPI's per-request route machinery (its wrappers, the dependency
    solver) cost about a quarter of the worker's CPU per notify (docs/benchmarks.md). Not in
    /openapi.json, which documents the API clients call."""

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(path, endpoint, methods=["POST"], include_in_schema=False)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            # As FastAPI's routes do: /metrics labels a request by its route's path.
            child_scope["route"] = self
        return match, child_scope


async def receive_notify(
    request: Request, notifies: Notifies, version: ApiVersion, what: str
) -> Response:
    """Read at most the notify size limit, apply it within the deadline, and reply in the
    format WeChat expects of the API ``version``. A version not configured here has no notify
    URL: 404, and nothing is read."""
    response, verdict = await _receive(request, notifies, version, what)
    kind = what.removeprefix("v3 ").removesuffix(" notify")  # "payment" or "refund"
    # Bounded: two kinds, two versions, a fixed set of verdicts.
    metrics.child(metrics.NOTIFY_VERDICTS, kind, version.value, verdict).inc()
    return response


async def _receive(
    request: Request, notifies: Notifies, version: ApiVersion, what: str
) -> tuple[Response, str]:
    """The reply, and the verdict ``/metrics`` counts it under."""
    gateway = notifies.gateways.configured(version)
    if gateway is None:
        message = f"WeChat Pay {version.value} is not configured"
        return JSONResponse({"code": "FAIL", "message": message}, status_code=404), "unconfigured"
    try:
        body = await read_limited(request)
    except ClientDisconnect:
        # Nobody is left to answer; WeChat will retry.
        return Response(status_code=400), "disconnected"
    if body is None:
        return gateway.notify_reply(False, "body too large", 413), "too_large"
    try:
        async with asyncio.timeout(NOTIFY_DEADLINE_SECONDS):
            peer = request.client.host if request.client else ""
            outcome = await notifies.handle(gateway, body, request.headers, peer)
    except NOTIFY_NOT_PROCESSED as exc:
        logger.error("%s not processed, WeChat will retry: %s", what, type(exc).__name__)
        return gateway.notify_reply(False, "temporarily unavailable", 503), "unavailable"
    if outcome.acknowledged:
        return gateway.notify_reply(True, "OK", 200), "acknowledged"
    if outcome.refused:
        return gateway.notify_reply(False, outcome.detail, 400), "refused"
    return gateway.notify_reply(False, outcome.detail, 200), "not_acknowledged"


async def read_limited(request: Request) -> bytes | None:
    """The body, or None past ``MAX_NOTIFY_BYTES`` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_NOTIFY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_NOTIFY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def refused_body(body: bytes) -> str:
    """What is kept of a refused body: its SHA-256 and length, which tell repeats apart and
    match a copy someone reports, and the start as text, which says what it was. Anyone can
    post junk, so no more than that: the audit table must not grow with what strangers send."""
    # PostgreSQL text cannot hold NUL; keep it visible without storing the byte.
    excerpt = body[:_EXCERPT].decode("utf-8", errors="replace").replace("\x00", "\\x00")
    digest = hashlib.sha256(body).hexdigest()
    return json.dumps(
        {"sha256": digest, "bytes": len(body), "excerpt": excerpt}, ensure_ascii=False
    )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A notify that will not be acted on, as it came: for the audit trail and the log."""

    what: str  # "payment notify", "refund notify"
    verdict: str
    reason: str
    body: bytes
    headers: Mapping[str, str]
    peer: str
    received_at: dt.datetime


class Refusals:
    """The audit of refused notifies, the same for payments and refunds: each is logged, and
    stored (as ``refused_body`` keeps it) while its source is within its budget of refused
    notifies per minute. Past it the sender still gets its FAIL, and only the log says so."""

    def __init__(
        self, db: Database, limiter: RateLimiter, per_minute: int, trusted_proxies: list[str]
    ) -> None:
        self._db = db
        self._limiter = limiter
        self._limit = Limit(per_minute)
        self._trusted = trusted_proxies

    async def record(self, refusal: Refusal) -> None:
        logger.warning("%s refused: %s (%s)", refusal.what, refusal.verdict, refusal.reason)
        if not await self._allows(refusal.headers, refusal.peer):
            return
        raw = refused_body(refusal.body)
        async with self._db.statement() as tx:
            await tx.audit.record_refused(refusal.received_at, refusal.verdict, raw, refusal.reason)

    async def _allows(self, headers: Mapping[str, str], peer: str) -> bool:
        """Count one refusal from the sender; whether it may still be recorded."""
        source = forwarded_client(peer, headers.get("x-forwarded-for", ""), self._trusted)
        if await self._limiter.allows(f"refused-notify:{source}", self._limit):
            return True
        logger.warning("refused notify from %s not recorded: over its budget", source)
        return False
