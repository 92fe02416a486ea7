"""Webhook endpoints, their secrets and deliveries, and the event feed: the admin side."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.db import utcnow
from app.errors import AppError, NotFound
from app.events.payloads import Renderer, event_body
from app.events.repository import AttemptRecord, DeliveryRecord, EndpointRecord, EventRecord
from app.events.types import ALL_TYPES, EventType
from app.events.urls import WebhookUrlRefused, check_webhook_url
from app.security import SecretBox

if TYPE_CHECKING:
    from app.uow import Database

# Bound into each sealed secret: a sealed value copied to another column does not open.
_SEAL_CONTEXT = "webhook endpoint secret"
_KNOWN_TYPES = frozenset(t.value for t in EventType) | {ALL_TYPES}


class WebhookNotFound(NotFound):
    code = "WEBHOOK_NOT_FOUND"
    message = "No such webhook endpoint."


class EventNotFound(NotFound):
    code = "EVENT_NOT_FOUND"
    message = "No such event."


class WebhookRefused(AppError):
    status = 422
    code = "WEBHOOK_INVALID"


class BadCursor(AppError):
    status = 422
    code = "INVALID_CURSOR"
    message = "The cursor is not one this feed handed out."


@dataclass(frozen=True, slots=True)
class DeliveryView:
    delivery: DeliveryRecord
    event_public_id: str
    event_type: str
    attempts: list[AttemptRecord]


def _events_column(types: list[str]) -> str:
    unknown = sorted(set(types) - _KNOWN_TYPES)
    if unknown:
        raise WebhookRefused(f"unknown event types: {', '.join(unknown)}")
    if not types:
        raise WebhookRefused('subscribe to at least one event type (or "*")')
    return "," + ",".join(sorted(set(types))) + ","


def _cursor(event: EventRecord) -> str:
    return f"{event.txid}.{event.id}"


def parse_cursor(cursor: str | None) -> tuple[int, int]:
    if not cursor:
        return (-1, 0)
    txid, _, event_id = cursor.partition(".")
    if not (txid.lstrip("-").isdigit() and event_id.isdigit()):
        raise BadCursor()
    return int(txid), int(event_id)


def parse_types(types: str | None) -> tuple[str, ...] | None:
    if not types:
        return None
    found = tuple(sorted({t.strip() for t in types.split(",") if t.strip()}))
    unknown = [t for t in found if t not in _KNOWN_TYPES - {ALL_TYPES}]
    if unknown:
        raise WebhookRefused(f"unknown event types: {', '.join(unknown)}", code="INVALID_TYPES")
    return found


class WebhookService:
    def __init__(self, db: Database, settings: Settings, box: SecretBox, render: Renderer) -> None:
        self._db = db
        self._settings = settings
        self._box = box
        self._render = render

    async def create(self, url: str, types: list[str], enabled: bool) -> tuple[EndpointRecord, str]:
        """Register an endpoint; its secret is returned here, once, and never shown again."""
        await self._check_url(url)
        secret = _new_secret()
        values = {
            "url": url,
            "events": _events_column(types),
            "enabled": enabled,
            "secret": self._box.seal(secret, context=_SEAL_CONTEXT),
        }
        async with self._db.statement() as tx:
            return await tx.webhooks.add_endpoint(values), secret

    async def list_endpoints(self) -> list[EndpointRecord]:
        async with self._db.statement() as tx:
            return await tx.webhooks.all_endpoints()

    async def get(self, endpoint_id: int) -> EndpointRecord:
        async with self._db.statement() as tx:
            found = await tx.webhooks.endpoint(endpoint_id)
        if found is None:
            raise WebhookNotFound()
        return found

    async def update(
        self, endpoint_id: int, url: str | None, types: list[str] | None, enabled: bool | None
    ) -> EndpointRecord:
        """Change an endpoint. Enabled again, it is no longer flagged, and every event it is
        owed is due at once."""
        values: dict[str, Any] = {}
        if url is not None:
            await self._check_url(url)
            values["url"] = url
        if types is not None:
            values["events"] = _events_column(types)
        if enabled is not None:
            values["enabled"] = enabled
        if enabled:
            values |= {"failing_since": None, "disabled_reason": None}
        async with self._db.transaction() as tx:
            if not await tx.webhooks.update_endpoint(endpoint_id, values):
                raise WebhookNotFound()
            if enabled:
                await tx.webhooks.wake(endpoint_id)
        return await self.get(endpoint_id)

    async def delete(self, endpoint_id: int) -> None:
        """Forget an endpoint and what it was owed (the events stay in the feed)."""
        async with self._db.statement() as tx:
            if not await tx.webhooks.delete_endpoint(endpoint_id):
                raise WebhookNotFound()

    async def rotate_secret(self, endpoint_id: int) -> tuple[EndpointRecord, str]:
        """A new secret, returned once; the old one still signs for the grace period."""
        endpoint = await self.get(endpoint_id)
        secret = _new_secret()
        grace = dt.timedelta(seconds=self._settings.webhook_secret_grace_seconds)
        values = {
            "secret": self._box.seal(secret, context=_SEAL_CONTEXT),
            "previous_secret": endpoint.secret,
            "previous_secret_expires_at": utcnow() + grace,
        }
        async with self._db.statement() as tx:
            if not await tx.webhooks.update_endpoint(endpoint_id, values):
                raise WebhookNotFound()
        return await self.get(endpoint_id), secret

    def signing_secrets(self, endpoint: EndpointRecord, now: dt.datetime) -> list[str]:
        """The secrets that sign a request now: the current one, and the previous one while
        its grace period runs."""
        found = [self._box.open(endpoint.secret, context=_SEAL_CONTEXT)]
        until = endpoint.previous_secret_expires_at
        if endpoint.previous_secret and until is not None and now < until:
            found.append(self._box.open(endpoint.previous_secret, context=_SEAL_CONTEXT))
        return found

    async def deliveries(self, endpoint_id: int, limit: int) -> list[DeliveryView]:
        """The endpoint's newest deliveries, each with every attempt made."""
        await self.get(endpoint_id)
        async with self._db.transaction() as tx:
            found = await tx.webhooks.deliveries_of(endpoint_id, limit)
            return [
                DeliveryView(d, public_id, kind, await tx.webhooks.attempts_of(d.id))
                for d, public_id, kind in found
            ]

    async def redeliver(self, public_id: str) -> int:
        """Send an event again to every endpoint subscribed to it; to how many."""
        async with self._db.transaction() as tx:
            event = await tx.events.by_public_id(public_id)
            if event is None:
                raise EventNotFound()
            return await tx.events.redeliver(event)

    async def feed(
        self, after: str | None, types: str | None, limit: int
    ) -> tuple[list[EventRecord], str]:
        """Events after ``after``, and the cursor to ask with next (the same one when there
        is nothing new yet)."""
        position = parse_cursor(after)
        async with self._db.statement() as tx:
            found = await tx.events.feed(position, parse_types(types), limit)
        return found, _cursor(found[-1]) if found else (after or "-1.0")

    def body(self, event: EventRecord) -> bytes:
        """The event's bytes, the same for a webhook and for the feed."""
        return event_body(event, self._render)

    async def _check_url(self, url: str) -> None:
        try:
            await check_webhook_url(url, self._settings)
        except WebhookUrlRefused as exc:
            raise WebhookRefused(str(exc), code="WEBHOOK_URL_REFUSED") from None


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)
