"""Every statement on ``orders`` and ``order_events``: this package owns both tables.

Payments and refunds change orders only through these methods. Each statement is built once,
here, with bind parameters, and runs on whichever driver the unit of work holds (``app.sql``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from enum import Enum
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ClauseElement,
    Integer,
    String,
    Table,
    bindparam,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from app.db import UTCDateTime, utcnow
from app.events.repository import EventRepository, add_from_row, new_public_id, snapshot
from app.events.types import EventType
from app.orders.models import Order, OrderEvent
from app.orders.states import PAYABLE, REFUNDABLE, OrderStatus, ReviewReason, sources_of
from app.products.models import Product
from app.sql import Executor, Row, UniqueViolation

orders = cast(Table, Order.__table__)
events = cast(Table, OrderEvent.__table__)
products = cast(Table, Product.__table__)

PAID_EVENT = "PAID"


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One stored order: the only shape in which orders leave this repository."""

    id: int
    out_trade_no: str
    user_id: int
    openid: str
    product_id: int
    quantity: int
    total_fee: int
    description: str
    status: str
    sign_type: str
    api_version: str
    client_ip: str
    idempotency_key: str | None
    time_expire: dt.datetime
    prepay_id: str | None
    prepay_expires_at: dt.datetime | None
    prepay_error: str | None
    transaction_id: str | None
    paid_at: dt.datetime | None
    cash_fee: int | None
    refunded_fee: int
    bank_type: str | None
    review_reason: str | None
    closed_at: dt.datetime | None
    sweep_lease_until: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ORDER_COLUMNS}


ORDER_COLUMNS = tuple(f.name for f in fields(OrderRecord))
# Selected in the record's field order, so a row becomes a record positionally.
_ALL = [orders.c[name] for name in ORDER_COLUMNS]


def _record(row: Row | None) -> OrderRecord | None:
    return None if row is None else OrderRecord(*row)


@dataclass(frozen=True, slots=True)
class PaymentView:
    """What settling a payment needs to know of an order (a narrow read on the notify path)."""

    id: int
    status: str
    total_fee: int
    transaction_id: str | None


class DuplicateOrder(Exception):
    """The order's idempotency key (or, by a one-in-2**60 chance, its ``out_trade_no``) is taken."""


class DuplicateTransaction(Exception):
    """The WeChat ``transaction_id`` already belongs to another order (a unique column)."""


@dataclass(frozen=True, slots=True)
class PaymentFacts:
    """What WeChat reports about a successful payment, as stored on the order."""

    transaction_id: str
    paid_at: dt.datetime | None
    cash_fee: int | None
    bank_type: str | None


# Columns the caller gives; the amount and the body come from the product, in the same
# statement, so the price read and the order written cannot disagree.
_GIVEN: dict[str, Any] = {
    "out_trade_no": String(),
    "user_id": BigInteger(),
    "openid": String(),
    "product_id": BigInteger(),
    "quantity": Integer(),
    "status": String(),
    "sign_type": String(),
    "api_version": String(),
    "client_ip": String(),
    "idempotency_key": String(),
    "time_expire": UTCDateTime(),
    "created_at": UTCDateTime(),
    "updated_at": UTCDateTime(),
}
_INSERT_PRICED = (
    orders.insert()
    .from_select(
        [*_GIVEN, "total_fee", "description"],
        select(
            *(bindparam(name, type_=kind) for name, kind in _GIVEN.items()),
            products.c.price_fen * bindparam("quantity", type_=Integer()),
            products.c.description,
        ).where(
            products.c.id == bindparam("product_id", type_=BigInteger()),
            products.c.active.is_(True),
            products.c.price_fen * bindparam("quantity", type_=Integer()) <= bindparam("max_fee"),
        ),
    )
    .returning(*_ALL)
)
_SET_PREPAY = (
    update(orders)
    .where(orders.c.out_trade_no == bindparam("no"), orders.c.status.in_(sorted(PAYABLE)))
    .values(
        prepay_id=bindparam("prepay_id"),
        prepay_expires_at=bindparam("expires_at"),
        prepay_error=bindparam("error"),
        updated_at=bindparam("now"),
    )
)
_BY_NO = select(*_ALL).where(orders.c.out_trade_no == bindparam("no"))
_BY_ID = select(*_ALL).where(orders.c.id == bindparam("oid"))
_BY_KEY = select(*_ALL).where(
    orders.c.user_id == bindparam("user_id"), orders.c.idempotency_key == bindparam("key")
)
_OF_USER = (
    select(*_ALL)
    .where(orders.c.user_id == bindparam("user_id"))
    .order_by(orders.c.created_at.desc(), orders.c.id.desc())
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
)
_NEEDING_REVIEW = (
    select(*_ALL)
    .where(orders.c.review_reason.is_not(None))
    .order_by(orders.c.updated_at.desc())
    .limit(bindparam("limit"))
)
_UNSETTLED = (
    select(func.count())
    .select_from(orders)
    .where(orders.c.api_version == bindparam("version"), orders.c.status.in_(sorted(PAYABLE)))
)
_VIEW = (orders.c.id, orders.c.status, orders.c.total_fee, orders.c.transaction_id)
_PAYMENT_VIEW = select(*_VIEW).where(orders.c.out_trade_no == bindparam("no"))
# Only a new reason moves the row: the same disagreement reported again (WeChat repeats a
# notify for a day) flags nothing new, so it raises no second event.
_FLAG_REVIEW = (
    update(orders)
    .where(
        orders.c.id == bindparam("oid"),
        or_(orders.c.review_reason.is_(None), orders.c.review_reason != bindparam("reason")),
    )
    .values(review_reason=bindparam("reason"), updated_at=bindparam("now"))
    .returning(*_ALL)
)
_BY_ID_LOCKED = {
    "postgresql": _BY_ID.with_for_update(),
    # SQLite's writers are serial: the transaction already excludes every other writer.
    "sqlite": _BY_ID,
}
# A refund sets its amount aside on a paid order, only while refunds stay within what was paid.
_RESERVE_REFUND = (
    update(orders)
    .where(
        orders.c.id == bindparam("oid"),
        orders.c.status.in_(sorted(REFUNDABLE)),
        orders.c.refunded_fee + bindparam("amount", type_=BigInteger()) <= orders.c.total_fee,
    )
    .values(
        refunded_fee=orders.c.refunded_fee + bindparam("amount", type_=BigInteger()),
        updated_at=bindparam("now"),
    )
)
_RELEASE_REFUND = (
    update(orders)
    .where(orders.c.id == bindparam("oid"))
    .values(
        refunded_fee=orders.c.refunded_fee - bindparam("amount", type_=BigInteger()),
        updated_at=bindparam("now"),
    )
)


@cache
def _move(target: OrderStatus) -> ClauseElement:
    """One allowed move as a guarded UPDATE: of two racing writers only one sees the row."""
    return (
        update(orders)
        .where(
            orders.c.out_trade_no == bindparam("no"),
            orders.c.status.in_(sorted(sources_of(target))),
        )
        .values(status=target.value, closed_at=bindparam("closed_at"), updated_at=bindparam("now"))
        .returning(*_ALL)
    )


_MARK_REFUNDED = (
    update(orders)
    .where(
        orders.c.id == bindparam("oid"), orders.c.status.in_(sorted(sources_of(OrderStatus.REFUND)))
    )
    .values(status=OrderStatus.REFUND.value, updated_at=bindparam("now"))
)


@cache
def _mark_paid_update(after_close: bool) -> Any:
    """Only an order in a source status whose amount matches is paid, so of two racing
    notifies only one sees a row. ``after_close``: the user paid just before our close reached
    WeChat; the money moved, so it is recorded and flagged for a refund review."""
    sources = {OrderStatus.CLOSED} if after_close else PAYABLE
    extra = {"review_reason": ReviewReason.PAID_AFTER_CLOSE.value} if after_close else {}
    return (
        update(orders)
        .where(
            orders.c.out_trade_no == bindparam("no"),
            orders.c.status.in_(sorted(sources & sources_of(OrderStatus.SUCCESS))),
            orders.c.total_fee == bindparam("fee"),
        )
        .values(
            status=OrderStatus.SUCCESS.value,
            transaction_id=bindparam("transaction_id"),
            paid_at=bindparam("paid_at"),
            cash_fee=bindparam("cash_fee"),
            bank_type=bindparam("bank_type"),
            updated_at=bindparam("now"),
            **extra,
        )
        .returning(*_ALL)
    )


def _insert_event(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(events).on_conflict_do_nothing(index_elements=[events.c.order_id, events.c.kind])


_ADD_EVENT = {
    dialect: _insert_event(dialect).values(
        order_id=bindparam("oid"),
        kind=bindparam("kind"),
        detail=bindparam("detail"),
        created_at=bindparam("now"),
    )
    for dialect in ("postgresql", "sqlite")
}


# A data-modifying CTE built from the ``paid`` CTE (every column of the order just paid), for
# another package's row to ride in the payment's statement: the notify's audit row does.
Rider = Callable[[Any], Any]


@cache
def _mark_paid_with_event(
    after_close: bool, riders: tuple[Rider, ...] = (), with_view: bool = False
) -> Any:
    """PostgreSQL only: the PAID event and the ``order.paid`` outbox event ride in the
    payment's own statement (data-modifying CTEs), one round trip instead of three; they
    exist exactly when the guarded UPDATE moved. So do the ``riders``' rows. Its row: the
    order as paid; ``with_view``, the paid order's id (NULL if nothing moved) and the order's
    payment view."""
    paid = _mark_paid_update(after_close).cte("paid")
    event = (
        _insert_event("postgresql")
        .from_select(
            ["order_id", "kind", "detail", "created_at"],
            select(
                paid.c.id, literal(PAID_EVENT), literal(""), bindparam("now", type_=UTCDateTime())
            ),
        )
        .cte("event")
    )
    # ... and the order.paid outbox event with its deliveries, in the same round trip.
    outbox = add_from_row(paid, EventType.ORDER_PAID.value)
    extra = [ride(paid) for ride in riders]
    if not with_view:
        return select(*(paid.c[name] for name in ORDER_COLUMNS)).add_cte(event, *outbox, *extra)
    # The order's payment view beside whether it moved (the paid row's id). The outer query
    # reads the snapshot the statement began with: an order paid by a transaction that
    # committed while this UPDATE waited shows as it was before (unpaid).
    return (
        select(paid.c.id, *_VIEW)
        .select_from(orders.outerjoin(paid, true()))
        .where(orders.c.out_trade_no == bindparam("no"))
        .add_cte(event, *outbox, *extra)
    )


def _claim(dialect: str) -> Any:
    """Lease payable orders created before a moment, oldest first. The lease (not a lock)
    keeps other replicas off these rows while this one talks to WeChat; on PostgreSQL
    ``SKIP LOCKED`` keeps two claims from waiting on each other."""
    now = bindparam("now", type_=UTCDateTime())
    free = or_(orders.c.sweep_lease_until.is_(None), orders.c.sweep_lease_until < now)
    candidates = (
        select(orders.c.id)
        .where(
            orders.c.status.in_(sorted(PAYABLE)),
            orders.c.created_at < bindparam("created_before", type_=UTCDateTime()),
            free,
        )
        .order_by(orders.c.created_at)
        .limit(bindparam("limit"))
    )
    if dialect == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    return (
        update(orders)
        .where(orders.c.id.in_(candidates.scalar_subquery()), free)
        .values(sweep_lease_until=bindparam("until", type_=UTCDateTime()))
        .returning(*_ALL)
    )


_CLAIM = {dialect: _claim(dialect) for dialect in ("postgresql", "sqlite")}


class Folded(Enum):
    """What ``OrderRepository.pay_in_one_statement`` did."""

    PAID = "paid"  # the order moved, and its events and the riders' rows with it
    NOT_PAID = "not paid"  # tried, nothing moved: not unpaid, another amount, a duplicate
    NOT_FOLDED = "not folded"  # this database runs them as statements apart: nothing tried


def _paid_params(
    out_trade_no: str,
    total_fee: int,
    facts: PaymentFacts,
    rider_params: Mapping[str, Any] | None,
    folds: bool,
) -> dict[str, Any]:
    params = {
        **(rider_params or {}),
        "no": out_trade_no,
        "fee": total_fee,
        "transaction_id": facts.transaction_id,
        "paid_at": facts.paid_at,
        "cash_fee": facts.cash_fee,
        "bank_type": facts.bank_type,
        "now": utcnow(),
    }
    if folds:
        params["outbox_public_id"] = new_public_id()
    return params


@contextmanager
def _taken_transaction(facts: PaymentFacts) -> Iterator[None]:
    """A unique constraint refusing a payment: in practice the transaction id, which another
    order holds (the outbox event's id in the same statement is random, 96 bits)."""
    try:
        yield
    except UniqueViolation as exc:
        raise DuplicateTransaction(facts.transaction_id) from exc


class OrderRepository:
    def __init__(self, sql: Executor, *, fold_writes: bool) -> None:
        self._sql = sql
        # The one PostgreSQL-only optimisation: writes that belong together (a payment, its
        # events, a notify's audit row) folded into one statement with data-modifying CTEs.
        # Elsewhere, and where it is turned off, each is a statement of its own in the
        # caller's transaction, with the same rows as the outcome.
        self._folds = fold_writes

    async def insert_priced(self, values: Mapping[str, Any], max_fee: int) -> OrderRecord | None:
        """Insert an order priced from its product; None if the product is not on sale or the
        total would exceed ``max_fee``; ``DuplicateOrder`` if its idempotency key is taken."""
        now = utcnow()
        params = {**values, "created_at": now, "updated_at": now, "max_fee": max_fee}
        try:
            return _record(await self._sql.fetchrow(_INSERT_PRICED, params))
        except UniqueViolation as exc:
            raise DuplicateOrder() from exc

    async def set_prepay(
        self,
        out_trade_no: str,
        prepay_id: str | None,
        expires_at: dt.datetime | None,
        error: str | None,
    ) -> bool:
        """Record the outcome of a prepay, only while the order is still payable."""
        params = {
            "no": out_trade_no,
            "prepay_id": prepay_id,
            "expires_at": expires_at,
            "error": error,
            "now": utcnow(),
        }
        return bool(await self._sql.execute(_SET_PREPAY, params))

    async def by_out_trade_no(self, out_trade_no: str) -> OrderRecord | None:
        return _record(await self._sql.fetchrow(_BY_NO, {"no": out_trade_no}))

    async def by_id(self, order_id: int) -> OrderRecord | None:
        return _record(await self._sql.fetchrow(_BY_ID, {"oid": order_id}))

    async def by_idempotency_key(self, user_id: int, key: str) -> OrderRecord | None:
        return _record(await self._sql.fetchrow(_BY_KEY, {"user_id": user_id, "key": key}))

    async def list_for_user(self, user_id: int, limit: int, offset: int) -> list[OrderRecord]:
        params = {"user_id": user_id, "limit": limit, "offset": offset}
        return [OrderRecord(*row) for row in await self._sql.fetch(_OF_USER, params)]

    async def needing_review(self, limit: int) -> list[OrderRecord]:
        """Orders flagged because money and records disagree, newest first."""
        return [
            OrderRecord(*row) for row in await self._sql.fetch(_NEEDING_REVIEW, {"limit": limit})
        ]

    async def count_payable(self, api_version: str) -> int:
        """Orders of ``api_version`` that may still be paid (WeChat may still report on them)."""
        return int(await self._sql.scalar(_UNSETTLED, {"version": api_version}))

    async def mark_closed(self, out_trade_no: str) -> OrderRecord | None:
        """Close an unpaid order; the order as closed, None if it was in no closable state."""
        return await self._move(out_trade_no, OrderStatus.CLOSED, utcnow())

    async def mark_payment_failed(self, out_trade_no: str) -> bool:
        return await self._move(out_trade_no, OrderStatus.PAYERROR, None) is not None

    async def _move(
        self, out_trade_no: str, target: OrderStatus, closed_at: dt.datetime | None
    ) -> OrderRecord | None:
        params = {"no": out_trade_no, "closed_at": closed_at, "now": utcnow()}
        return _record(await self._sql.fetchrow(_move(target), params))

    async def mark_paid(
        self,
        out_trade_no: str,
        total_fee: int,
        facts: PaymentFacts,
        *,
        after_close: bool,
        riders: tuple[Rider, ...] = (),
        rider_params: Mapping[str, Any] | None = None,
    ) -> OrderRecord | None:
        """Pay an unpaid order (or, ``after_close``, a closed one) and record its PAID event
        and its ``order.paid`` outbox event once; the order as paid if it moved, None if it
        was in no such state or the amount differs; ``DuplicateTransaction`` if another order
        holds the transaction id. ``riders`` (PostgreSQL only) write their rows in the same
        statement, from ``rider_params``."""
        if riders and not self._folds:
            raise ValueError("riders are CTEs of PostgreSQL's statement; write their rows apart")
        params = _paid_params(out_trade_no, total_fee, facts, rider_params, self._folds)
        with _taken_transaction(facts):
            if self._folds:
                statement = _mark_paid_with_event(after_close=after_close, riders=riders)
                return _record(await self._sql.fetchrow(statement, params))
            order = _record(await self._sql.fetchrow(_mark_paid_update(after_close), params))
        if order is not None:
            await self.add_event(order.id, PAID_EVENT)
            paid = snapshot(order=order.as_dict())
            await EventRepository(self._sql).add(EventType.ORDER_PAID.value, order.id, paid)
        return order

    async def pay_in_one_statement(
        self,
        out_trade_no: str,
        total_fee: int,
        facts: PaymentFacts,
        riders: tuple[Rider, ...],
        rider_params: Mapping[str, Any],
    ) -> tuple[Folded, PaymentView | None]:
        """An unpaid order paid, with its events and the ``riders``' rows, by one statement
        that commits on its own where writes are folded; ``Folded.NOT_FOLDED``, touching
        nothing, where they are not (the caller then writes them in a transaction).

        When it does not move the order, the same round trip returns the order's payment view
        as the statement's snapshot had it (None: no such order). A paid order stays paid and
        its transaction id never changes, so a view that shows it paid is still true; one that
        shows it unpaid may be out of date (a concurrent payment), and says nothing."""
        if not self._folds:
            return Folded.NOT_FOLDED, None
        params = _paid_params(out_trade_no, total_fee, facts, rider_params, folds=True)
        with _taken_transaction(facts):
            statement = _mark_paid_with_event(after_close=False, riders=riders, with_view=True)
            row = await self._sql.fetchrow(statement, params)
        if row is None:
            return Folded.NOT_PAID, None
        paid_id, *view = row
        return (Folded.PAID, None) if paid_id is not None else (Folded.NOT_PAID, PaymentView(*view))

    async def payment_view(self, out_trade_no: str) -> PaymentView | None:
        row = await self._sql.fetchrow(_PAYMENT_VIEW, {"no": out_trade_no})
        return None if row is None else PaymentView(*row)

    async def add_event(self, order_id: int, kind: str, detail: str = "") -> bool:
        """Record a fact about an order once; False if it was already recorded."""
        params = {"oid": order_id, "kind": kind, "detail": detail, "now": utcnow()}
        return bool(await self._sql.execute(_ADD_EVENT[self._sql.dialect], params))

    async def flag_review(self, order_id: int, reason: ReviewReason) -> OrderRecord | None:
        """Mark an order for a person: money and our records disagree. The order as flagged,
        or None if it already carried this reason."""
        params = {"oid": order_id, "reason": reason.value, "now": utcnow()}
        return _record(await self._sql.fetchrow(_FLAG_REVIEW, params))

    async def lock_for_event(self, order_id: int) -> OrderRecord | None:
        """The order, its row locked until the transaction ends (PostgreSQL), so the events
        of one order are written in the order their transactions commit."""
        return _record(
            await self._sql.fetchrow(_BY_ID_LOCKED[self._sql.dialect], {"oid": order_id})
        )

    async def reserve_refund(self, order_id: int, amount: int) -> bool:
        """Set ``amount`` aside on a paid order, only if refunds stay within what was paid.
        One guarded UPDATE: racing refunds cannot both pass the check."""
        params = {"oid": order_id, "amount": amount, "now": utcnow()}
        return bool(await self._sql.execute(_RESERVE_REFUND, params))

    async def release_refund(self, order_id: int, amount: int) -> None:
        """Give a reserved amount back (the refund failed or closed)."""
        await self._sql.execute(
            _RELEASE_REFUND, {"oid": order_id, "amount": amount, "now": utcnow()}
        )

    async def mark_refunded(self, order_id: int) -> None:
        await self._sql.execute(_MARK_REFUNDED, {"oid": order_id, "now": utcnow()})

    async def claim_for_sweep(
        self, created_before: dt.datetime, lease_seconds: int, limit: int
    ) -> list[OrderRecord]:
        """Lease up to ``limit`` payable orders created before a moment, oldest first; the
        orders as leased (the sweep acts on them without reading them again)."""
        now = utcnow()
        params = {
            "now": now,
            "created_before": created_before,
            "limit": limit,
            "until": now + dt.timedelta(seconds=lease_seconds),
        }
        return [
            OrderRecord(*row) for row in await self._sql.fetch(_CLAIM[self._sql.dialect], params)
        ]
