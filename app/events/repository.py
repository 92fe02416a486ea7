"""Every statement on the outbox and the webhook tables: this package owns them.

An event is written with one statement on PostgreSQL (a data-modifying CTE inserts the event
and its deliveries, one per subscribed endpoint) and two on SQLite, in the caller's
transaction: it exists exactly when the change it reports commits.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import (
    cast as sql_cast,
)

from app.db import UTCDateTime, utcnow
from app.events.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.events.types import ALL_TYPES
from app.sql import Executor

outbox = cast(Table, OutboxEvent.__table__)
endpoints = cast(Table, WebhookEndpoint.__table__)
deliveries = cast(Table, WebhookDelivery.__table__)
attempts = cast(Table, WebhookAttempt.__table__)


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    public_id: str
    type: str
    order_id: int
    # What the event reports, as stored: ``snapshot`` (rendered for sending by
    # ``app.events.payloads.event_body``, with ``app.eventdata``).
    data: str
    txid: int
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    id: int
    url: str
    events: str
    enabled: bool
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: dt.datetime | None
    failing_since: dt.datetime | None
    disabled_reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def event_types(self) -> list[str]:
        return [t for t in self.events.split(",") if t]


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    event_id: int
    endpoint_id: int
    attempts: int
    next_attempt_at: dt.datetime
    delivered_at: dt.datetime | None
    last_status: int | None
    lease_until: dt.datetime | None
    lease_token: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: int
    delivery_id: int
    attempted_at: dt.datetime
    status: int | None
    latency_ms: int
    body_excerpt: str
    error: str | None


def _columns(table: Table, record: type) -> list[Any]:
    return [table.c[f.name] for f in fields(record)]


_EVENT = _columns(outbox, EventRecord)
_ENDPOINT = _columns(endpoints, EndpointRecord)
_DELIVERY = _columns(deliveries, DeliveryRecord)
_ATTEMPT = _columns(attempts, AttemptRecord)

_NOW = bindparam("now", type_=UTCDateTime())
# Which transaction wrote an event, and the oldest one still running: the feed's watermark.
_TXID = sql_cast(sql_cast(func.pg_current_xact_id(), Text), BigInteger)
_XMIN = sql_cast(sql_cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger)


def snapshot(**rows: dict[str, Any]) -> str:
    """The rows an event reports (``order=``, ``refund=``), column by column, as JSON: what
    the event's ``data`` is rendered from. PostgreSQL's ``to_jsonb`` of the same row, in the
    folded payment statement, gives the same keys."""
    return json.dumps(rows, default=_iso, separators=(",", ":"))


def _iso(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} in an event snapshot")


def new_public_id() -> str:
    return "evt_" + secrets.token_hex(12)


def _subscribed(event_type: Any) -> Any:
    return or_(
        endpoints.c.events.like(literal("%,") + event_type + literal(",%")),
        endpoints.c.events == f",{ALL_TYPES},",
    )


def _fan_out(event_id: Any, event_type: Any, source: Any = None) -> Any:
    """One delivery per subscribed endpoint, enabled or not: a disabled endpoint keeps what
    it is owed and receives it when enabled again."""
    rows = select(event_id, endpoints.c.id, literal(0), _NOW, _NOW).where(_subscribed(event_type))
    if source is not None:
        rows = rows.select_from(source).join(endpoints, literal(True))
    columns = ["event_id", "endpoint_id", "attempts", "next_attempt_at", "created_at"]
    return insert(deliveries).from_select(columns, rows)


_EVENT_VALUES = {
    "public_id": bindparam("public_id"),
    "type": bindparam("type"),
    "order_id": bindparam("order_id"),
    "data": bindparam("data"),
    "created_at": _NOW,
}


def _add_pg() -> Any:
    event = (
        insert(outbox)
        .values(**_EVENT_VALUES, txid=_TXID)
        .returning(outbox.c.id, outbox.c.type)
        .cte("event")
    )
    return _fan_out(event.c.id, event.c.type, event).add_cte(event)


_ADD_PG = _add_pg()


def add_from_row(source: Any, event_type: str) -> list[Any]:
    """PostgreSQL: CTEs that write an ``event_type`` event (and its deliveries) for each row
    ``source`` (a data-modifying CTE returning every column of an order) returns, in that
    statement; its ``public_id`` is the parameter ``outbox_public_id``."""
    data = sql_cast(
        func.jsonb_build_object(literal("order"), func.to_jsonb(source.table_valued())), Text
    )
    rows = select(
        bindparam("outbox_public_id", type_=String()),
        literal(event_type),
        source.c.id,
        data,
        _TXID,
        _NOW,
    )
    columns = ["public_id", "type", "order_id", "data", "txid", "created_at"]
    event = (
        insert(outbox)
        .from_select(columns, rows)
        .returning(outbox.c.id, outbox.c.type)
        .cte("outbox_event")
    )
    return [event, _fan_out(event.c.id, event.c.type, event).cte("outbox_deliveries")]


_ADD_SQLITE = insert(outbox).values(**_EVENT_VALUES, txid=0).returning(outbox.c.id)
_FAN_OUT_SQLITE = _fan_out(bindparam("eid", type_=BigInteger()), bindparam("type"))
_BY_PUBLIC_ID = select(*_EVENT).where(outbox.c.public_id == bindparam("public_id"))
_BY_ID = select(*_EVENT).where(outbox.c.id == bindparam("id"))
# Redelivery reaches endpoints subscribed since, too; the unique index keeps one each.
_FAN_OUT_MISSING = insert(deliveries).from_select(
    ["event_id", "endpoint_id", "attempts", "next_attempt_at", "created_at"],
    select(bindparam("eid", type_=BigInteger()), endpoints.c.id, literal(0), _NOW, _NOW)
    .where(_subscribed(bindparam("type")))
    .where(
        ~exists().where(
            deliveries.c.event_id == bindparam("eid", type_=BigInteger()),
            deliveries.c.endpoint_id == endpoints.c.id,
        )
    ),
)
_REDELIVER = (
    update(deliveries)
    .where(deliveries.c.event_id == bindparam("eid"))
    .values(delivered_at=None, next_attempt_at=_NOW)
)


# Cached: the types come validated, sorted and deduplicated (``parse_types``), so there are
# at most as many filters as sets of event types, each built and compiled once.
@cache
def _feed(dialect: str, types: tuple[str, ...] | None) -> Any:
    after = tuple_(outbox.c.txid, outbox.c.id) > tuple_(
        bindparam("txid", type_=BigInteger()), bindparam("id", type_=BigInteger())
    )
    query = select(*_EVENT).where(after)
    if dialect == "postgresql":
        # Only events older than every transaction still running: one that commits later
        # has a txid at or above this watermark, so it sorts after anything handed out.
        query = query.where(outbox.c.txid < _XMIN)
    if types:
        query = query.where(outbox.c.type.in_(sorted(types)))
    return query.order_by(outbox.c.txid, outbox.c.id).limit(bindparam("limit"))


_FEEDS = {d: _feed(d, None) for d in ("postgresql", "sqlite")}


class EventRepository:
    def __init__(self, sql: Executor) -> None:
        self._sql = sql

    async def add(self, event_type: str, order_id: int, data: str) -> None:
        """Write one event and a delivery for each endpoint subscribed to its type."""
        params = {
            "public_id": new_public_id(),
            "type": event_type,
            "order_id": order_id,
            "data": data,
            "now": utcnow(),
        }
        if self._sql.dialect == "postgresql":
            await self._sql.execute(_ADD_PG, params)
            return
        event_id = await self._sql.scalar(_ADD_SQLITE, params)
        await self._sql.execute(_FAN_OUT_SQLITE, {**params, "eid": event_id})

    async def by_public_id(self, public_id: str) -> EventRecord | None:
        row = await self._sql.fetchrow(_BY_PUBLIC_ID, {"public_id": public_id})
        return None if row is None else EventRecord(*row)

    async def by_id(self, event_id: int) -> EventRecord | None:
        row = await self._sql.fetchrow(_BY_ID, {"id": event_id})
        return None if row is None else EventRecord(*row)

    async def feed(
        self, after: tuple[int, int], types: tuple[str, ...] | None, limit: int
    ) -> list[EventRecord]:
        """Events after the cursor ``(txid, id)``, in cursor order; on PostgreSQL only those
        no running transaction can still precede (see ``_feed``)."""
        stmt = _FEEDS[self._sql.dialect] if not types else _feed(self._sql.dialect, types)
        params = {"txid": after[0], "id": after[1], "limit": limit}
        return [EventRecord(*row) for row in await self._sql.fetch(stmt, params)]

    async def redeliver(self, event: EventRecord) -> int:
        """Make the event due again at every endpoint subscribed to it; how many."""
        params = {"eid": event.id, "type": event.type, "now": utcnow()}
        await self._sql.execute(_FAN_OUT_MISSING, params)
        return await self._sql.execute(_REDELIVER, params)


_ADD_ENDPOINT = insert(endpoints).returning(*_ENDPOINT)
_ENDPOINT_BY_ID = select(*_ENDPOINT).where(endpoints.c.id == bindparam("id"))
_ALL_ENDPOINTS = select(*_ENDPOINT).order_by(endpoints.c.id)
_ENABLED_ENDPOINTS = select(*_ENDPOINT).where(endpoints.c.enabled.is_(True))
_DELETE_ENDPOINT = delete(endpoints).where(endpoints.c.id == bindparam("ep"))
_WAKE = (
    update(deliveries)
    .where(deliveries.c.endpoint_id == bindparam("ep"), deliveries.c.delivered_at.is_(None))
    .values(next_attempt_at=_NOW)
)
_ENDPOINT_OK = (
    update(endpoints)
    .where(endpoints.c.id == bindparam("ep"), endpoints.c.failing_since.is_not(None))
    .values(failing_since=None)
)
_ENDPOINT_FAILING = (
    update(endpoints)
    .where(endpoints.c.id == bindparam("ep"), endpoints.c.failing_since.is_(None))
    .values(failing_since=_NOW)
)
_DISABLE = (
    update(endpoints)
    .where(
        endpoints.c.id == bindparam("ep"),
        endpoints.c.enabled.is_(True),
        endpoints.c.failing_since < bindparam("cut", type_=UTCDateTime()),
    )
    .values(enabled=False, disabled_reason=bindparam("reason"), updated_at=_NOW)
    .returning(endpoints.c.id)
)


_FREE = or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < _NOW)
# A delivery of endpoint ``ep`` that is owed, due and leased by no one.
_DUE = and_(
    deliveries.c.endpoint_id == bindparam("ep"),
    deliveries.c.delivered_at.is_(None),
    deliveries.c.next_attempt_at <= _NOW,
    _FREE,
)
_ANY_DUE = select(exists().where(_DUE))


def _claim(dialect: str) -> Any:
    """Lease due deliveries of one endpoint, oldest due first; ``SKIP LOCKED`` on PostgreSQL
    keeps replicas claiming at once from waiting on each other."""
    due = (
        select(deliveries.c.id)
        .where(_DUE)
        .order_by(deliveries.c.next_attempt_at)
        .limit(bindparam("limit"))
    )
    if dialect == "postgresql":
        due = due.with_for_update(skip_locked=True)
    return (
        update(deliveries)
        .where(deliveries.c.id.in_(due.scalar_subquery()), _FREE)
        .values(lease_until=bindparam("until", type_=UTCDateTime()), lease_token=bindparam("token"))
        .returning(*_DELIVERY)
    )


_CLAIM = {d: _claim(d) for d in ("postgresql", "sqlite")}
# Claims for one endpoint take turns, so two replicas cannot both see room for the same slot.
# PostgreSQL locks the endpoint's row; SQLite has no row locks, and a write as the first
# statement takes its one write lock before the transaction reads anything.
_CLAIM_TURN = {
    "postgresql": select(endpoints.c.id).where(endpoints.c.id == bindparam("ep")).with_for_update(),
    "sqlite": update(endpoints).where(endpoints.c.id == bindparam("ep")).values(id=endpoints.c.id),
}
_LEASED = (
    select(func.count())
    .select_from(deliveries)
    .where(
        deliveries.c.endpoint_id == bindparam("ep"),
        deliveries.c.lease_token.isnot(None),
        deliveries.c.lease_until >= _NOW,
    )
)
_HELD = and_(deliveries.c.id == bindparam("did"), deliveries.c.lease_token == bindparam("token"))
_DELIVERED = (
    update(deliveries)
    .where(_HELD)
    .values(
        delivered_at=_NOW,
        attempts=deliveries.c.attempts + 1,
        last_status=bindparam("code"),
        lease_until=None,
        lease_token=None,
    )
)
_RETRY = (
    update(deliveries)
    .where(_HELD)
    .values(
        attempts=deliveries.c.attempts + 1,
        last_status=bindparam("code"),
        next_attempt_at=bindparam("next_at", type_=UTCDateTime()),
        lease_until=None,
        lease_token=None,
    )
)
_ADD_ATTEMPT = insert(attempts).values(
    delivery_id=bindparam("did"),
    attempted_at=_NOW,
    status=bindparam("code"),
    latency_ms=bindparam("ms"),
    body_excerpt=bindparam("excerpt"),
    error=bindparam("err"),
)
_DELIVERIES_OF = (
    select(*_DELIVERY, outbox.c.public_id, outbox.c.type)
    .join(outbox, outbox.c.id == deliveries.c.event_id)
    .where(deliveries.c.endpoint_id == bindparam("endpoint_id"))
    .order_by(deliveries.c.id.desc())
    .limit(bindparam("limit"))
)
_ATTEMPTS_OF = (
    select(*_ATTEMPT)
    .where(attempts.c.delivery_id == bindparam("delivery_id"))
    .order_by(attempts.c.id)
)

# Per endpoint (there are few): each count reads the partial index of undelivered rows, so a
# scrape costs the same however many deliveries have succeeded before.
_UNDELIVERED = and_(deliveries.c.endpoint_id == endpoints.c.id, deliveries.c.delivered_at.is_(None))
_BACKLOG = select(
    endpoints.c.id,
    endpoints.c.enabled,
    select(func.count()).where(_UNDELIVERED).scalar_subquery(),
    select(func.min(deliveries.c.created_at)).where(_UNDELIVERED).scalar_subquery(),
).order_by(endpoints.c.id)


@dataclass(frozen=True, slots=True)
class EndpointBacklog:
    """What an endpoint is still owed: for ``/metrics``, the webhook lag."""

    endpoint_id: int
    enabled: bool
    pending: int
    oldest_pending_since: dt.datetime | None


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one HTTP attempt gave: a status (None if no answer), its latency and excerpt."""

    status: int | None
    latency_ms: int
    excerpt: str
    error: str | None = None


class WebhookRepository:
    def __init__(self, sql: Executor) -> None:
        self._sql = sql

    async def add_endpoint(self, values: dict[str, Any]) -> EndpointRecord:
        now = utcnow()
        row = await self._sql.fetchrow(
            _ADD_ENDPOINT.values(**values, created_at=now, updated_at=now)
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        return EndpointRecord(*row)

    async def endpoint(self, endpoint_id: int) -> EndpointRecord | None:
        row = await self._sql.fetchrow(_ENDPOINT_BY_ID, {"id": endpoint_id})
        return None if row is None else EndpointRecord(*row)

    async def all_endpoints(self) -> list[EndpointRecord]:
        return [EndpointRecord(*row) for row in await self._sql.fetch(_ALL_ENDPOINTS)]

    async def enabled_endpoints(self) -> list[EndpointRecord]:
        return [EndpointRecord(*row) for row in await self._sql.fetch(_ENABLED_ENDPOINTS)]

    async def update_endpoint(self, endpoint_id: int, values: dict[str, Any]) -> bool:
        """Change an endpoint's columns (a statement per call shape; admin use only)."""
        stmt = (
            update(endpoints)
            .where(endpoints.c.id == endpoint_id)
            .values(**values, updated_at=utcnow())
        )
        return bool(await self._sql.execute(stmt))

    async def delete_endpoint(self, endpoint_id: int) -> bool:
        return bool(await self._sql.execute(_DELETE_ENDPOINT, {"ep": endpoint_id}))

    async def wake(self, endpoint_id: int) -> int:
        """Make every undelivered event of the endpoint due now (it was enabled again)."""
        return await self._sql.execute(_WAKE, {"ep": endpoint_id, "now": utcnow()})

    async def has_due(self, endpoint_id: int) -> bool:
        """Whether the endpoint is owed a delivery that is due and leased by no one: a read,
        so an idle endpoint costs a pass no lock and (on SQLite) no write."""
        return bool(await self._sql.scalar(_ANY_DUE, {"ep": endpoint_id, "now": utcnow()}))

    async def claim(
        self, endpoint_id: int, cap: int, token: str, lease: dt.timedelta
    ) -> list[DeliveryRecord]:
        """Lease due deliveries of one endpoint while fewer than ``cap`` are leased, by any
        replica. Run it in a transaction: the turn it takes lasts until the commit."""
        now = utcnow()
        await self._sql.execute(_CLAIM_TURN[self._sql.dialect], {"ep": endpoint_id})
        room = cap - (await self._sql.scalar(_LEASED, {"ep": endpoint_id, "now": now}) or 0)
        if room <= 0:
            return []
        params = {"ep": endpoint_id, "limit": room, "token": token, "until": now + lease}
        rows = await self._sql.fetch(_CLAIM[self._sql.dialect], {**params, "now": now})
        return [DeliveryRecord(*row) for row in rows]

    async def record_attempt(
        self, delivery: DeliveryRecord, outcome: AttemptOutcome, next_at: dt.datetime | None
    ) -> bool:
        """Log the attempt and settle the delivery (delivered when ``next_at`` is None); False
        if our lease ran out and another worker holds it (the attempt is logged anyway)."""
        now = utcnow()
        params = {
            "did": delivery.id,
            "token": delivery.lease_token,
            "code": outcome.status,
            "ms": outcome.latency_ms,
            "excerpt": outcome.excerpt,
            "err": outcome.error,
            "next_at": next_at,
            "now": now,
        }
        await self._sql.execute(_ADD_ATTEMPT, params)
        return bool(await self._sql.execute(_DELIVERED if next_at is None else _RETRY, params))

    async def endpoint_succeeded(self, endpoint_id: int) -> None:
        await self._sql.execute(_ENDPOINT_OK, {"ep": endpoint_id})

    async def endpoint_failed(self, endpoint_id: int, disable_after: dt.timedelta) -> bool:
        """Note the failure; disable the endpoint if it has failed since before
        ``disable_after`` ago. True if this call disabled it."""
        now = utcnow()
        await self._sql.execute(_ENDPOINT_FAILING, {"ep": endpoint_id, "now": now})
        reason = f"failing since more than {int(disable_after.total_seconds())} s"
        params = {"ep": endpoint_id, "cut": now - disable_after, "reason": reason, "now": now}
        return await self._sql.scalar(_DISABLE, params) is not None

    async def deliveries_of(
        self, endpoint_id: int, limit: int
    ) -> list[tuple[DeliveryRecord, str, str]]:
        """The endpoint's newest deliveries, each with its event's public id and type."""
        rows = await self._sql.fetch(_DELIVERIES_OF, {"endpoint_id": endpoint_id, "limit": limit})
        width = len(_DELIVERY)
        found = [tuple(row) for row in rows]
        return [(DeliveryRecord(*r[:width]), r[width], r[width + 1]) for r in found]

    async def backlog(self) -> list[EndpointBacklog]:
        """Every endpoint with its undelivered events: how many, and since when."""
        rows = await self._sql.fetch(_BACKLOG)
        return [EndpointBacklog(r[0], bool(r[1]), int(r[2]), r[3]) for r in rows]

    async def attempts_of(self, delivery_id: int) -> list[AttemptRecord]:
        rows = await self._sql.fetch(_ATTEMPTS_OF, {"delivery_id": delivery_id})
        return [AttemptRecord(*row) for row in rows]
