"""The delivery worker: sends what the outbox owes each endpoint, signed, at least once.

Replicas share the work through leases on the delivery rows (claimed with ``SKIP LOCKED`` on
PostgreSQL), so in normal operation nothing is sent twice; a worker killed mid-send leaves
its lease to run out and another sends the event again (consumers dedupe by event id). At
most ``WXPAY_WEBHOOK_MAX_IN_FLIGHT`` requests are open to one endpoint, counted over every
replica (the leases held), each bounded by ``WXPAY_WEBHOOK_TIMEOUT_SECONDS`` from first byte
out to last byte read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from app.config import Settings
from app.db import utcnow
from app.events.decisions import WebhookBackoff, next_attempt_at
from app.events.repository import AttemptOutcome, DeliveryRecord, EndpointRecord
from app.events.service import WebhookService
from app.events.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header

if TYPE_CHECKING:
    from app.uow import Database

logger = logging.getLogger(__name__)

EXCERPT_BYTES = 500
USER_AGENT = "wxpay-backend-webhooks/1"


class DeliveryWorker:
    """Built once by the composition root; the lifespan runs ``run_forever``, the CLI
    ``deliver_once``."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        webhooks: WebhookService,
        http: httpx.AsyncClient,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._webhooks = webhooks
        self._http = http
        self._jitter = jitter
        self._clock = clock
        self._policy = WebhookBackoff.from_settings(settings)
        self._timeout = settings.webhook_timeout_seconds
        self._max_in_flight = settings.webhook_max_in_flight
        self._poll = settings.webhook_poll_interval_seconds
        self._disable_after = dt.timedelta(seconds=settings.webhook_disable_after_seconds)
        # Longer than any one send, so a live worker's lease never runs out under it.
        self._lease = dt.timedelta(seconds=self._timeout + 30)
        self._in_flight: Counter[int] = Counter()
        self._sends: set[asyncio.Task[None]] = set()

    async def run_forever(self) -> None:
        """Start due deliveries until cancelled; a failed pass is logged. With sends in
        flight it looks again as soon as one ends (a freed slot is refilled at once, so a
        backlog drains at the receiver's pace, not one batch per poll); otherwise it waits
        the poll interval."""
        while True:
            try:
                await self._start_due()
            except Exception:
                logger.exception("webhook dispatch failed; retrying next interval")
            if self._sends:
                await asyncio.wait(
                    self._sends, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED
                )
            else:
                await asyncio.sleep(self._poll)

    async def deliver_once(self) -> int:
        """Send everything due now, wait for the answers; how many attempts were made."""
        started = await self._start_due()
        await asyncio.gather(*started, return_exceptions=True)
        return len(started)

    async def close(self) -> None:
        """Let sends in flight finish (they are bounded by the timeout), then stop."""
        if self._sends:
            await asyncio.wait(self._sends, timeout=self._timeout + 1)
        for task in self._sends:
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)

    async def _start_due(self) -> list[asyncio.Task[None]]:
        async with self._db.statement() as tx:
            endpoints = await tx.webhooks.enabled_endpoints()
        started: list[asyncio.Task[None]] = []
        token = lease_token()
        for endpoint in endpoints:
            if self._in_flight[endpoint.id] >= self._max_in_flight:
                continue  # full with our own sends: no need to ask the database
            async with self._db.statement() as tx:
                if not await tx.webhooks.has_due(endpoint.id):
                    continue  # nothing to claim: no need to take the endpoint's turn
            async with self._db.transaction() as tx:
                claimed = await tx.webhooks.claim(
                    endpoint.id, self._max_in_flight, token, self._lease
                )
            started += [self._start(endpoint, delivery) for delivery in claimed]
        return started

    def _start(self, endpoint: EndpointRecord, delivery: DeliveryRecord) -> asyncio.Task[None]:
        self._in_flight[endpoint.id] += 1
        task = asyncio.create_task(self._deliver(endpoint, delivery))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
        return task

    async def _deliver(self, endpoint: EndpointRecord, delivery: DeliveryRecord) -> None:
        try:
            async with self._db.statement() as tx:
                event = await tx.events.by_id(delivery.event_id)
            assert event is not None  # deliveries keep their events
            outcome = await self._post(endpoint, event.public_id, self._webhooks.body(event))
            await self._settle(endpoint, delivery, outcome)
        except Exception:
            # The lease runs out and the delivery is tried again: nothing is lost.
            logger.exception("webhook delivery %s failed unexpectedly", delivery.id)
        finally:
            self._in_flight[endpoint.id] -= 1

    async def _post(self, endpoint: EndpointRecord, event_id: str, body: bytes) -> AttemptOutcome:
        """One signed attempt; each has its own ``t``, so each is signed afresh."""
        signing = self._webhooks.signing_secrets(endpoint, utcnow())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_ID_HEADER: event_id,
            SIGNATURE_HEADER: signature_header(signing, int(self._clock()), body),
        }
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                status, excerpt = await self._exchange(endpoint.url, body, headers)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return AttemptOutcome(None, _ms_since(started), "", type(exc).__name__)
        return AttemptOutcome(status, _ms_since(started), excerpt)

    async def _exchange(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        # Streamed, so a receiver answering with a huge body costs us only the excerpt.
        request = self._http.build_request("POST", url, content=body, headers=headers)
        response = await self._http.send(request, stream=True)
        try:
            excerpt = b""
            async for chunk in response.aiter_bytes():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_BYTES:
                    break
        finally:
            await response.aclose()
        return response.status_code, excerpt[:EXCERPT_BYTES].decode(errors="replace")

    async def _settle(
        self, endpoint: EndpointRecord, delivery: DeliveryRecord, outcome: AttemptOutcome
    ) -> None:
        attempts = delivery.attempts + 1
        next_at = next_attempt_at(outcome.status, attempts, utcnow(), self._policy, self._jitter())
        async with self._db.transaction() as tx:
            await tx.webhooks.record_attempt(delivery, outcome, next_at)
            if next_at is None:
                await tx.webhooks.endpoint_succeeded(endpoint.id)
                return
            disabled = await tx.webhooks.endpoint_failed(endpoint.id, self._disable_after)
        if disabled:
            logger.warning("webhook endpoint %s disabled: failing for too long", endpoint.id)


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def lease_token() -> str:
    """A lease's token: the holder's pid, then 88 random bits. The pid lets an operator (and
    the reliability suite) see which process holds a delivery; the random part makes the
    token one this pass alone can settle."""
    return f"{os.getpid():x}-{secrets.token_hex(11)}"
