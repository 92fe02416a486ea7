"""Every statement on ``refunds``. The orders they belong to change through the orders
package's repository (reservations, the ``REFUND`` status, review flags)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, cast

from sqlalchemy import ClauseElement, Table, bindparam, func, or_, select, update

from app.db import UTCDateTime, utcnow
from app.orders.models import Order
from app.refunds.models import Refund
from app.refunds.states import OPEN, RefundStatus, sources_of
from app.sql import Executor, Row, UniqueViolation

refunds = cast(Table, Refund.__table__)


@dataclass(frozen=True, slots=True)
class RefundRecord:
    id: int
    out_refund_no: str
    order_id: int
    refund_fee: int
    reason: str | None
    status: str
    idempotency_key: str | None
    refund_id: str | None
    error: str | None
    success_time: dt.datetime | None
    lease_until: dt.datetime | None
    lease_token: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in REFUND_COLUMNS}


REFUND_COLUMNS = tuple(f.name for f in fields(RefundRecord))
_ALL = [refunds.c[name] for name in REFUND_COLUMNS]


def _record(row: Row | None) -> RefundRecord | None:
    return None if row is None else RefundRecord(*row)


class DuplicateRefund(Exception):
    """The refund's idempotency key is already used on this order."""


_NOW = bindparam("now", type_=UTCDateTime())
_FREE = or_(refunds.c.lease_until.is_(None), refunds.c.lease_until < _NOW)
_ADD = (
    refunds.insert()
    .values(
        out_refund_no=bindparam("out_refund_no"),
        order_id=bindparam("order_id"),
        refund_fee=bindparam("refund_fee"),
        reason=bindparam("reason"),
        idempotency_key=bindparam("idempotency_key"),
        status=RefundStatus.PENDING.value,
        lease_until=bindparam("lease_until"),
        lease_token=bindparam("token"),
        created_at=_NOW,
        updated_at=_NOW,
    )
    .returning(*_ALL)
)
# By the order's number: a replayed request names the order, and one statement finds both.
_BY_KEY = select(*_ALL).where(
    refunds.c.order_id
    == select(Order.id).where(Order.out_trade_no == bindparam("no")).scalar_subquery(),
    refunds.c.idempotency_key == bindparam("key"),
)
_BY_NO = select(*_ALL).where(refunds.c.out_refund_no == bindparam("no"))
_OF_ORDER = select(*_ALL).where(refunds.c.order_id == bindparam("order_id")).order_by(refunds.c.id)
_OPEN_OF_VERSION = (
    select(func.count())
    .select_from(refunds)
    .where(
        refunds.c.status.in_(sorted(OPEN)),
        refunds.c.order_id.in_(select(Order.id).where(Order.api_version == bindparam("version"))),
    )
)
_NOTE_ERROR = (
    update(refunds)
    .where(refunds.c.out_refund_no == bindparam("no"))
    .values(error=bindparam("error"), updated_at=_NOW)
)
_TAKE_LEASE = (
    update(refunds)
    .where(
        refunds.c.out_refund_no == bindparam("no"),
        refunds.c.status.in_(sorted(OPEN)),
        _FREE,
    )
    .values(lease_until=bindparam("until"), lease_token=bindparam("token"))
)
_RENEW_LEASE = (
    update(refunds)
    .where(refunds.c.out_refund_no == bindparam("no"), refunds.c.lease_token == bindparam("token"))
    .values(lease_until=bindparam("until"))
)
_RELEASE_LEASE = (
    update(refunds)
    .where(refunds.c.out_refund_no == bindparam("no"), refunds.c.lease_token == bindparam("token"))
    .values(lease_until=None, lease_token=None, updated_at=_NOW)
)
# Open, unleased refunds untouched since their status's due moment, least recently handled
# first (so long-PROCESSING ones cannot starve the rest).
_OVERDUE = (
    select(refunds.c.out_refund_no)
    .where(
        or_(
            (refunds.c.status == RefundStatus.PENDING.value)
            & (refunds.c.updated_at < bindparam("pending_due", type_=UTCDateTime())),
            (refunds.c.status == RefundStatus.PROCESSING.value)
            & (refunds.c.updated_at < bindparam("processing_due", type_=UTCDateTime())),
        ),
        _FREE,
    )
    .order_by(refunds.c.updated_at, refunds.c.id)
    .limit(bindparam("limit"))
)

_COUNT_BY_STATUS = select(refunds.c.status, func.count()).group_by(refunds.c.status)


@cache
def _move(target: RefundStatus) -> ClauseElement:
    """One allowed move as a guarded UPDATE; WeChat's refund id and success time are kept
    when the outcome carries them."""
    return (
        update(refunds)
        .where(
            refunds.c.out_refund_no == bindparam("no"),
            refunds.c.status.in_(sorted(sources_of(target))),
        )
        .values(
            status=target.value,
            refund_id=_coalesce("refund_id"),
            success_time=_coalesce("success_time"),
            updated_at=_NOW,
        )
        .returning(*_ALL)
    )


def _coalesce(name: str) -> Any:
    kind = refunds.c[name].type
    return func.coalesce(bindparam(name, type_=kind), refunds.c[name])


class RefundRepository:
    def __init__(self, sql: Executor) -> None:
        self._sql = sql

    async def add(self, values: dict[str, Any], token: str, lease: dt.timedelta) -> RefundRecord:
        """Store a ``PENDING`` refund, leased to its creator (``token``) for ``lease``."""
        now = utcnow()
        params = {**values, "token": token, "lease_until": now + lease, "now": now}
        try:
            row = await self._sql.fetchrow(_ADD, params)
        except UniqueViolation as exc:
            raise DuplicateRefund() from exc
        assert row is not None  # INSERT ... RETURNING always returns the row
        return RefundRecord(*row)

    async def by_key(self, out_trade_no: str, key: str) -> RefundRecord | None:
        """The refund of order ``out_trade_no`` made with idempotency key ``key``."""
        return _record(await self._sql.fetchrow(_BY_KEY, {"no": out_trade_no, "key": key}))

    async def by_out_refund_no(self, out_refund_no: str) -> RefundRecord | None:
        return _record(await self._sql.fetchrow(_BY_NO, {"no": out_refund_no}))

    async def of_order(self, order_id: int) -> list[RefundRecord]:
        return [
            RefundRecord(*row) for row in await self._sql.fetch(_OF_ORDER, {"order_id": order_id})
        ]

    async def count_open(self, api_version: str) -> int:
        """Refunds still in flight on orders of ``api_version``."""
        return int(await self._sql.scalar(_OPEN_OF_VERSION, {"version": api_version}))

    async def move(
        self,
        out_refund_no: str,
        target: RefundStatus,
        refund_id: str | None = None,
        success_time: dt.datetime | None = None,
    ) -> RefundRecord | None:
        """Apply one allowed move with a guarded UPDATE; None if the refund was not in a source
        status (another writer got there first, or the move is not allowed)."""
        params = {
            "no": out_refund_no,
            "refund_id": refund_id,
            "success_time": success_time,
            "now": utcnow(),
        }
        return _record(await self._sql.fetchrow(_move(target), params))

    async def note_error(self, out_refund_no: str, error: str) -> None:
        params = {"no": out_refund_no, "error": error[:500], "now": utcnow()}
        await self._sql.execute(_NOTE_ERROR, params)

    async def take_lease(self, out_refund_no: str, token: str, lease: dt.timedelta) -> bool:
        """Lease one open refund to ``token`` unless someone else's lease is running."""
        now = utcnow()
        params = {"no": out_refund_no, "token": token, "until": now + lease, "now": now}
        return bool(await self._sql.execute(_TAKE_LEASE, params))

    async def renew_lease(self, out_refund_no: str, token: str, lease: dt.timedelta) -> bool:
        """Extend our lease; False if it is no longer ours (it ran out and was taken)."""
        params = {"no": out_refund_no, "token": token, "until": utcnow() + lease}
        return bool(await self._sql.execute(_RENEW_LEASE, params))

    async def release_lease(self, out_refund_no: str, token: str) -> None:
        """End our lease; the refund counts as handled now (the sweep's clock restarts)."""
        await self._sql.execute(
            _RELEASE_LEASE, {"no": out_refund_no, "token": token, "now": utcnow()}
        )

    async def count_by_status(self) -> dict[str, int]:
        """How many refunds are in each status (for ``/metrics``)."""
        return {row[0]: int(row[1]) for row in await self._sql.fetch(_COUNT_BY_STATUS)}

    async def overdue(
        self, pending_due: dt.datetime, processing_due: dt.datetime, limit: int
    ) -> list[str]:
        """Up to ``limit`` open, unleased refunds untouched since their status's due moment."""
        params = {
            "pending_due": pending_due,
            "processing_due": processing_due,
            "limit": limit,
            "now": utcnow(),
        }
        return [row[0] for row in await self._sql.fetch(_OVERDUE, params)]
