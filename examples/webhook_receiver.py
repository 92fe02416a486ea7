"""A receiver for this service's webhooks: copy it into your own systems and adapt it.

It does the three things every receiver must:

1. **Verify** ``Wxpay-Signature`` over the raw body before parsing it. The header is
   ``t=<unix seconds>,v1=<hex>`` (one ``v1=`` per valid secret while a secret is being
   rotated); ``v1`` is HMAC-SHA256 keyed with the secret's UTF-8 bytes over ``"<t>.<body>"``.
   A ``t`` more than 5 minutes from now is refused, so a captured request cannot be replayed.
2. **Dedupe by event id**: delivery is at least once, so the same event may come again.
3. **Ignore stale events by ``sequence``**: order is not guaranteed; an event whose
   ``sequence`` is lower than one already seen for the same order is older news.

Answer 2xx quickly once the event is safely stored; anything else is retried for days.

    WXPAY_WEBHOOK_SECRETS=whsec_... uvicorn examples.webhook_receiver:app --port 9000

It needs only the standard library and Starlette (which FastAPI brings).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TOLERANCE_SECONDS = 300


def verify_signature(
    header: str, body: bytes, secret: str, now: float | None = None, tolerance: int = 300
) -> bool:
    """Whether ``header`` carries ``secret``'s signature of exactly these ``body`` bytes."""
    pairs = [item.partition("=") for item in header.split(",")]
    stamps = [value for key, _, value in pairs if key == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamps[0])) > tolerance:
        return False
    signed = stamps[0].encode() + b"." + body
    expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return any(key == "v1" and hmac.compare_digest(value, expected) for key, _, value in pairs)


@dataclass
class EventLog:
    """What this receiver has taken in. A real one keeps this in its database, and records
    the event in the same transaction as the work it triggers."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest_sequence: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    stale: int = 0
    refused: int = 0

    def take(self, event: dict[str, Any]) -> str:
        if event["id"] in self.events:
            self.duplicates += 1
            return "duplicate"
        self.events[event["id"]] = event
        order = event["data"].get("out_trade_no", "")
        if event["sequence"] < self.latest_sequence.get(order, 0):
            self.stale += 1  # recorded, but it must not undo what a newer event said
            return "stale"
        self.latest_sequence[order] = event["sequence"]
        return "new"


def make_app(secrets: list[str], log: EventLog | None = None) -> Starlette:
    """The receiver, accepting signatures by any of ``secrets`` (more than one while you
    rotate: the new one, and the old one until the service stops signing with it)."""
    seen = log if log is not None else EventLog()

    async def receive(request: Request) -> Response:
        body = await request.body()  # the raw bytes: verify these, never re-serialised JSON
        header = request.headers.get("wxpay-signature", "")
        if not any(verify_signature(header, body, secret) for secret in secrets):
            seen.refused += 1
            return Response("bad signature", status_code=400)
        event = json.loads(body)
        if event["id"] != request.headers.get("wxpay-event-id"):
            seen.refused += 1
            return Response("event id mismatch", status_code=400)
        return Response(seen.take(event), status_code=200)

    async def health(_: Request) -> Response:
        return Response("ok")

    routes = [Route("/webhooks", receive, methods=["POST"]), Route("/healthz", health)]
    app = Starlette(routes=routes)
    app.state.log = seen
    return app


app = make_app([s for s in os.environ.get("WXPAY_WEBHOOK_SECRETS", "").split(",") if s])
