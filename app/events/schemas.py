from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.events.repository import EndpointRecord
from app.events.service import DeliveryView

_EXAMPLE: dict[str, Any] = {"url": "https://shop.example.com/hooks/wxpay", "events": ["order.paid"]}


class WebhookIn(BaseModel):
    """The names are fixed for tooling: ``url``, ``events``, ``enabled``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    url: str = Field(max_length=2048)
    events: list[str] = Field(
        min_length=1, max_length=16, description='Event types, or ["*"] for every type.'
    )
    enabled: bool = True


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    events: list[str] | None = Field(default=None, min_length=1, max_length=16)
    enabled: bool | None = None


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    enabled: bool
    failing_since: dt.datetime | None = Field(
        description="Set while deliveries fail; cleared by the next 2xx."
    )
    disabled_reason: str | None = Field(description="Why the service disabled the endpoint.")
    previous_secret_expires_at: dt.datetime | None = Field(
        description="Until then the secret before the last rotation signs too."
    )
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, endpoint: EndpointRecord) -> WebhookOut:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            events=endpoint.event_types,
            enabled=endpoint.enabled,
            failing_since=endpoint.failing_since,
            disabled_reason=endpoint.disabled_reason,
            previous_secret_expires_at=endpoint.previous_secret_expires_at,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="Shown only in this response: keep it now.")


class AttemptOut(BaseModel):
    attempted_at: dt.datetime
    status: int | None = Field(description="The HTTP status; null when no answer came.")
    latency_ms: int
    body_excerpt: str
    error: str | None


class DeliveryOut(BaseModel):
    id: int
    event_id: str
    event_type: str
    attempts: int
    next_attempt_at: dt.datetime
    delivered_at: dt.datetime | None
    last_status: int | None
    attempt_log: list[AttemptOut]

    @classmethod
    def of(cls, view: DeliveryView) -> DeliveryOut:
        d = view.delivery
        return cls(
            id=d.id,
            event_id=view.event_public_id,
            event_type=view.event_type,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            delivered_at=d.delivered_at,
            last_status=d.last_status,
            attempt_log=[AttemptOut.model_validate(a, from_attributes=True) for a in view.attempts],
        )


class EventPage(BaseModel):
    """For the documentation: the feed is served as the stored bytes of each event."""

    items: list[dict[str, Any]] = Field(
        description='Events as delivered: {"id", "type", "created_at", "sequence", "data"}.'
    )
    next_cursor: str = Field(description="Pass as ?after= to continue.")


class Redelivered(BaseModel):
    deliveries: int = Field(description="How many endpoints will receive the event again.")
