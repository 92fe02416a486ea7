"""The admin API for webhooks and events (admin token)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.db import MAX_BIGINT
from app.deps import AdminDep, WebhookServiceDep
from app.errors import error_responses
from app.events.schemas import (
    DeliveryOut,
    EventPage,
    Redelivered,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
    WebhookWithSecret,
)

# A bigint column: a larger id in the path is a 422, not an overflow in the driver.
EndpointId = Annotated[int, Path(gt=0, le=MAX_BIGINT)]

router = APIRouter(prefix="/api/v1/admin", tags=["webhooks"], dependencies=[AdminDep])


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookWithSecret,
    responses=error_responses(403, 422),
    summary="Register a webhook endpoint; its secret is in this response only",
)
async def create_webhook(body: WebhookIn, service: WebhookServiceDep) -> WebhookWithSecret:
    endpoint, secret = await service.create(body.url, body.events, body.enabled)
    return WebhookWithSecret(**WebhookOut.of(endpoint).model_dump(), secret=secret)


@router.get("/webhooks", response_model=list[WebhookOut], summary="Every webhook endpoint")
async def list_webhooks(service: WebhookServiceDep) -> list[WebhookOut]:
    return [WebhookOut.of(e) for e in await service.list_endpoints()]


@router.get(
    "/webhooks/{endpoint_id}", response_model=WebhookOut, responses=error_responses(403, 404)
)
async def get_webhook(endpoint_id: EndpointId, service: WebhookServiceDep) -> WebhookOut:
    return WebhookOut.of(await service.get(endpoint_id))


@router.patch(
    "/webhooks/{endpoint_id}",
    response_model=WebhookOut,
    responses=error_responses(403, 404, 422),
    summary="Change an endpoint; enabling it again sends what it is owed",
)
async def update_webhook(
    endpoint_id: EndpointId, body: WebhookPatch, service: WebhookServiceDep
) -> WebhookOut:
    updated = await service.update(endpoint_id, body.url, body.events, body.enabled)
    return WebhookOut.of(updated)


@router.delete(
    "/webhooks/{endpoint_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(403, 404),
)
async def delete_webhook(endpoint_id: EndpointId, service: WebhookServiceDep) -> Response:
    await service.delete(endpoint_id)
    return Response(status_code=204)


@router.post(
    "/webhooks/{endpoint_id}/rotate-secret",
    response_model=WebhookWithSecret,
    responses=error_responses(403, 404),
    summary="A new secret, shown once; the old one stays valid for the grace period",
)
async def rotate_secret(endpoint_id: EndpointId, service: WebhookServiceDep) -> WebhookWithSecret:
    endpoint, secret = await service.rotate_secret(endpoint_id)
    return WebhookWithSecret(**WebhookOut.of(endpoint).model_dump(), secret=secret)


@router.get(
    "/webhooks/{endpoint_id}/deliveries",
    response_model=list[DeliveryOut],
    responses=error_responses(403, 404),
    summary="The endpoint's newest deliveries with every attempt",
)
async def list_deliveries(
    endpoint_id: EndpointId,
    service: WebhookServiceDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[DeliveryOut]:
    return [DeliveryOut.of(v) for v in await service.deliveries(endpoint_id, limit)]


@router.get(
    "/events",
    response_model=EventPage,
    responses=error_responses(403, 422),
    summary="The events as a feed: pass next_cursor back as ?after=",
)
async def event_feed(
    service: WebhookServiceDep,
    after: Annotated[str | None, Query(max_length=60)] = None,
    types: Annotated[str | None, Query(max_length=300, description="a,b")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    events, cursor = await service.feed(after, types, limit)
    # The stored bytes of each event, as webhooks carry them, not re-serialised.
    items = b",".join(service.body(event) for event in events)
    tail = json.dumps(cursor).encode()
    return Response(
        b'{"items":[' + items + b'],"next_cursor":' + tail + b"}", media_type="application/json"
    )


@router.post(
    "/events/{event_id}/redeliver",
    status_code=202,
    response_model=Redelivered,
    responses=error_responses(403, 404),
    summary="Send an event again to every endpoint subscribed to it",
)
async def redeliver(event_id: str, service: WebhookServiceDep) -> Redelivered:
    return Redelivered(deliveries=await service.redeliver(event_id))
