"""The data layer: every repository method, run on both drivers against PostgreSQL, agrees.

Each statement is written once in Core; on PostgreSQL the service runs it on asyncpg (compiled
once, ``app.sql``), SQLite runs it through SQLAlchemy. Here the same script of repository calls
runs through each driver on the same PostgreSQL database, and what each call returned and what
the tables hold afterwards must be equal. A third run takes the portable way on PostgreSQL
(``fold_writes=False``: each write its own statement, as on SQLite), so the one PostgreSQL-only
optimisation, writes folded into one statement, is held to the same outcome. Times the
repositories stamp with ``utcnow()`` differ between runs; they are checked for being aware UTC
and then compared as a placeholder. So are the outbox's random public ids, once their shape is
checked, and an event's transaction id (see ``_event``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import Base, create_engine
from app.events.repository import AttemptOutcome, DeliveryRecord, EndpointRecord, EventRecord
from app.events.types import EventType
from app.gateway import PaymentResult
from app.orders.repository import (
    DuplicateOrder,
    DuplicateTransaction,
    Folded,
    OrderRecord,
    PaymentFacts,
    PaymentView,
)
from app.orders.states import ReviewReason
from app.payments.repository import AuditRow, audit_of_paid, audit_params
from app.payments.service import AuditRecord, PaymentService
from app.refunds.repository import DuplicateRefund
from app.refunds.states import RefundStatus
from app.sweep import REFUSED_VERDICTS
from app.uow import Database, PgDatabase, SqlAlchemyDatabase, UnitOfWork
from tests.db import order_values, truncate_all

T0 = dt.datetime(2020, 5, 1, 8, 0, tzinfo=dt.UTC)  # a year no stamped time falls in
MOMENT = "<aware utc>"
PUBLIC_ID = "<public id>"
_PUBLIC_ID = re.compile(r"evt_[0-9a-f]{24}")
APART = "asyncpg, writes apart"  # the run that takes SQLite's way: riders are refused there


@pytest.fixture
async def drivers(database_url: str, engine: AsyncEngine) -> AsyncIterator[dict[str, Database]]:
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("compares the two drivers on PostgreSQL (the PostgreSQL pass runs it)")
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    both: dict[str, Database] = {
        "asyncpg": PgDatabase(pool, dsn),
        "sqlalchemy": SqlAlchemyDatabase(create_engine(database_url)),
        APART: PgDatabase(pool, dsn, fold_writes=False),
    }
    yield both
    await both["sqlalchemy"].close()
    await pool.close()  # the two asyncpg databases share it


async def test_every_repository_method_agrees_on_both_drivers(
    drivers: dict[str, Database], engine: AsyncEngine
) -> None:
    seen = {}
    for name, db in drivers.items():
        await truncate_all(engine)
        calls = await _script(db, engine, folds=name != APART)
        seen[name] = (calls, await _tables(engine))

    calls_pg, tables_pg = seen["asyncpg"]
    for other in ("sqlalchemy", APART):
        calls, tables = seen[other]
        for (step, on_pg), (_, on_other) in zip(calls_pg, calls, strict=True):
            assert on_pg == on_other, (other, step)
        assert tables_pg == tables, other
    # The script did reach every table it means to (a vacuous run would compare empty lists).
    assert {name for name, rows in tables_pg.items() if rows} >= {
        "users", "auth_sessions", "products", "orders", "order_events", "refunds",
        "payment_notifies", "outbox_events", "webhook_endpoints", "webhook_deliveries",
        "webhook_attempts", "rate_limits",
    }  # fmt: skip


async def _script(db: Database, engine: AsyncEngine, *, folds: bool) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    async def call(step: str, work: Callable[[UnitOfWork], Awaitable[Any]]) -> Any:
        try:
            async with db.transaction() as tx:
                result = await work(tx)
        except (DuplicateOrder, DuplicateTransaction, DuplicateRefund) as exc:
            result = type(exc).__name__
        calls.append((step, _plain(result)))
        return result

    await _auth_and_products(call)
    await _add_endpoints(call)  # first, so every event below fans out to them
    await _orders(call)
    await _refunds(call)
    await _notify_payments(db, calls)
    await call(
        "audit", lambda tx: tx.audit.record(AuditRow(T0, "PAID", "{}", "ok", "N1", "T1", 990))
    )
    await _pay_with_riders(call, folds)
    await _counts_and_locks(call)
    await _prune_and_limit(call)
    first = await _events(call)
    await _deliveries(call)
    await _endpoint_health(call)
    await _endpoint_admin(call, first)
    await _feed_caught_up(engine)
    await _feed(call)
    async with db.statement() as tx:
        await tx.ping()  # returns nothing; raises if the round trip fails
        calls.append(("schema version", await tx.schema_version()))
    return calls


Call = Callable[[str, Callable[[UnitOfWork], Awaitable[Any]]], Awaitable[Any]]


async def _auth_and_products(call: Call) -> None:
    user = await call("upsert user", lambda tx: tx.auth.upsert_user("o-1", None, "sealed-1"))
    await call("upsert again", lambda tx: tx.auth.upsert_user("o-1", "u-1", "sealed-2"))
    later = T0 + dt.timedelta(days=1)
    await call("add session", lambda tx: tx.auth.add_session(user, "h1", later))
    await call("add old session", lambda tx: tx.auth.add_session(user, "h2", T0))
    await call("find session", lambda tx: tx.auth.find_session("h1"))
    await call("find unknown session", lambda tx: tx.auth.find_session("nope"))
    await call("prune sessions", lambda tx: tx.auth.delete_expired_sessions(T0 + dt.timedelta(1)))
    await call("add product", lambda tx: tx.products.add("套餐", "短信平台-短信套餐购买", 990))
    await call("add product 2", lambda tx: tx.products.add("月卡", "示例商城-会员充值", 1))
    await call("disable", lambda tx: tx.products.set_active(2, False))
    await call("disable unknown", lambda tx: tx.products.set_active(99, False))
    await call("on sale", lambda tx: tx.products.list())
    await call("every product", lambda tx: tx.products.list(include_inactive=True))
    await call("product", lambda tx: tx.products.get(2))
    await call("count", lambda tx: tx.products.count())
    other = await call("upsert other", lambda tx: tx.auth.upsert_user("o-2", None, "sealed-3"))
    await call("user id", lambda tx: tx.auth.find_user_id("o-2"))
    await call("unknown user id", lambda tx: tx.auth.find_user_id("nobody"))
    await call("add session h3", lambda tx: tx.auth.add_session(other, "h3", later))
    await call("add session h4", lambda tx: tx.auth.add_session(other, "h4", later))
    h3 = await call("find h3", lambda tx: tx.auth.find_session("h3"))
    await call("log out", lambda tx: tx.auth.delete_session(h3.session_id))
    await call("log out again", lambda tx: tx.auth.delete_session(h3.session_id))
    await call("log out everywhere", lambda tx: tx.auth.delete_user_sessions(other))
    await call("nothing left", lambda tx: tx.auth.delete_user_sessions(other))


def _order(no: str, key: str | None, product_id: int = 1, quantity: int = 2) -> dict[str, Any]:
    return order_values(
        no, key=key, product_id=product_id, quantity=quantity,
        time_expire=T0 + dt.timedelta(hours=2),
    )  # fmt: skip


async def _orders(call: Call) -> None:
    for no, key in (("N1", "k1"), ("N2", None), ("N3", "k3"), ("N4", None), ("N5", None)):
        await call(
            f"insert {no}",
            lambda tx, no=no, key=key: tx.orders.insert_priced(_order(no, key), 10_000),
        )
    await call("same key", lambda tx: tx.orders.insert_priced(_order("N9", "k1"), 10_000))
    await call("not on sale", lambda tx: tx.orders.insert_priced(_order("N8", None, 2), 10_000))
    await call("too much", lambda tx: tx.orders.insert_priced(_order("N7", None, 1, 99), 10_000))
    await call("prepay", lambda tx: tx.orders.set_prepay("N1", "wx1", T0, None))
    await call("prepay failed", lambda tx: tx.orders.set_prepay("N2", None, None, "SYSTEMERROR"))
    await call("by no", lambda tx: tx.orders.by_out_trade_no("N1"))
    await call("by id", lambda tx: tx.orders.by_id(3))
    await call("by key", lambda tx: tx.orders.by_idempotency_key(1, "k3"))
    await call("page", lambda tx: tx.orders.list_for_user(1, 2, 1))
    await call("claim", lambda tx: tx.orders.claim_for_sweep(dt.datetime.now(dt.UTC), 60, 2))
    await call("claim again", lambda tx: tx.orders.claim_for_sweep(dt.datetime.now(dt.UTC), 60, 5))
    facts = PaymentFacts("T1", T0, 1980, "CMC")
    await call("pay", lambda tx: tx.orders.mark_paid("N1", 1980, facts, after_close=False))
    await call("pay twice", lambda tx: tx.orders.mark_paid("N1", 1980, facts, after_close=False))
    await call("wrong amount", lambda tx: tx.orders.mark_paid("N2", 1, facts, after_close=False))
    await call(
        "same transaction", lambda tx: tx.orders.mark_paid("N2", 1980, facts, after_close=False)
    )
    await call("close", lambda tx: tx.orders.mark_closed("N3"))
    await call("close paid", lambda tx: tx.orders.mark_closed("N1"))
    await call("attempt failed", lambda tx: tx.orders.mark_payment_failed("N4"))
    late = PaymentFacts("T3", None, None, None)
    await call(
        "paid after close", lambda tx: tx.orders.mark_paid("N3", 1980, late, after_close=True)
    )
    await call("view", lambda tx: tx.orders.payment_view("N1"))
    await call("view unknown", lambda tx: tx.orders.payment_view("nope"))
    await call("event", lambda tx: tx.orders.add_event(1, "SHIPPED", "box 7"))
    await call("event again", lambda tx: tx.orders.add_event(1, "SHIPPED", "box 8"))
    await call("flag", lambda tx: tx.orders.flag_review(2, ReviewReason.AMOUNT_MISMATCH))
    await call("review list", lambda tx: tx.orders.needing_review(10))


async def _notify_payments(db: Database, calls: list[tuple[str, Any]]) -> None:
    """The notify's payment with its audit row: one folded statement on PostgreSQL, a
    transaction of statements apart otherwise (``PaymentService.apply_paid``)."""
    service = PaymentService(db)
    paid = PaymentResult("N5", "T5", 1980, 1980, "CMC", T0)
    for step, result in (
        ("notify pays", paid),
        ("notify again", paid),
        ("notify, other amount", PaymentResult("N4", "T6", 1, 1, "CMC", T0)),
        ("notify, taken transaction", PaymentResult("N4", "T5", 1980, 1980, "CMC", T0)),
    ):
        verdict = await service.apply_paid(result, AuditRecord(f'{{"step": "{step}"}}', T0))
        calls.append((step, verdict.value))


async def _refunds(call: Call) -> None:
    lease = dt.timedelta(minutes=1)
    values = {
        "out_refund_no": "R1",
        "order_id": 1,
        "refund_fee": 500,
        "reason": "r",
        "idempotency_key": "k",
    }
    await call("add refund", lambda tx: tx.refunds.add(values, "tok", lease))
    await call("same key", lambda tx: tx.refunds.add({**values, "out_refund_no": "R2"}, "t", lease))
    await call("reserve", lambda tx: tx.orders.reserve_refund(1, 500))
    await call("reserve too much", lambda tx: tx.orders.reserve_refund(1, 1481))
    await call("reserve unpaid", lambda tx: tx.orders.reserve_refund(4, 1))
    await call("taken lease", lambda tx: tx.refunds.take_lease("R1", "other", lease))
    await call("renew", lambda tx: tx.refunds.renew_lease("R1", "tok", lease))
    await call("renew not mine", lambda tx: tx.refunds.renew_lease("R1", "other", lease))
    await call("note error", lambda tx: tx.refunds.note_error("R1", "x" * 600))
    await call("release lease", lambda tx: tx.refunds.release_lease("R1", "tok"))
    await call("take lease", lambda tx: tx.refunds.take_lease("R1", "tok2", lease))
    await call("accepted", lambda tx: tx.refunds.move("R1", RefundStatus.PROCESSING, "WR1"))
    await call("no such move", lambda tx: tx.refunds.move("R1", RefundStatus.FAILED))
    await call("succeeded", lambda tx: tx.refunds.move("R1", RefundStatus.SUCCESS, None, T0))
    await call("order refunded", lambda tx: tx.orders.mark_refunded(1))
    await call("release amount", lambda tx: tx.orders.release_refund(1, 100))
    await call("by key", lambda tx: tx.refunds.by_key("N1", "k"))
    await call("by key, other order", lambda tx: tx.refunds.by_key("N2", "k"))
    await call("by no", lambda tx: tx.refunds.by_out_refund_no("R1"))
    await call("of order", lambda tx: tx.refunds.of_order(1))
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    await call("overdue", lambda tx: tx.refunds.overdue(future, future, 10))


async def _add_endpoints(call: Call) -> None:
    for url, types, enabled in (
        ("https://a.example/hook", ",order.paid,refund.succeeded,", True),
        ("https://b.example/hook", ",*,", True),
        ("https://c.example/hook", ",order.closed,", False),  # disabled: still owed events
    ):
        values = {"url": url, "events": types, "enabled": enabled, "secret": f"sealed {url}"}
        await call(f"endpoint {url}", lambda tx, v=values: tx.webhooks.add_endpoint(v))


RIDER_RAW = '{"step": "riders"}'
# A coupon paid part: cash_fee below total_fee, so a rider that took one for the other differs.
RIDER_CASH = 1880


async def _pay_with_riders(call: Call, folds: bool) -> None:
    """The notify's audit row riding in the payment's statement where writes fold; where they
    do not, riders are refused and the row is written apart in the same transaction, as
    ``PaymentService`` does, so every run leaves the same rows."""
    for no in ("N6", "N7"):
        await call(
            f"insert {no}", lambda tx, no=no: tx.orders.insert_priced(_order(no, None), 10_000)
        )
    await call("close N7", lambda tx: tx.orders.mark_closed("N7"))
    await call("one statement", lambda tx: _pay_in_one_statement(tx, "N6", "T7", folds))
    await call("one statement again", lambda tx: _pay_in_one_statement(tx, "N6", "T7", folds))
    await call("one statement, taken", lambda tx: _pay_in_one_statement(tx, "N2", "T1", folds))
    await call("rider after close", lambda tx: _mark_paid_with_rider(tx, "N7", "T8", folds))


async def _pay_in_one_statement(
    tx: UnitOfWork, no: str, tid: str, folds: bool
) -> tuple[str, PaymentView | None]:
    """Where writes fold, an order the statement does not pay comes back as it found it;
    where they do not, the same view is read apart, so both drivers give the same answer."""
    facts = PaymentFacts(tid, T0, RIDER_CASH, "CMC")
    params = audit_params(T0, RIDER_RAW)
    folded, found = await tx.orders.pay_in_one_statement(no, 1980, facts, (audit_of_paid,), params)
    assert (folded is not Folded.NOT_FOLDED) == folds, folded
    if folded is Folded.NOT_FOLDED:
        assert found is None
        order = await _paid_apart(tx, no, facts, after_close=False)
        folded = Folded.NOT_PAID if order is None else Folded.PAID
        found = None if order is not None else await tx.orders.payment_view(no)
    return folded.value, found


async def _mark_paid_with_rider(
    tx: UnitOfWork, no: str, tid: str, folds: bool
) -> OrderRecord | None:
    facts = PaymentFacts(tid, T0, RIDER_CASH, "CMC")
    rider: dict[str, Any] = {
        "riders": (audit_of_paid,),
        "rider_params": audit_params(T0, RIDER_RAW),
    }
    if folds:
        return await tx.orders.mark_paid(no, 1980, facts, after_close=True, **rider)
    with pytest.raises(ValueError, match="riders"):
        await tx.orders.mark_paid(no, 1980, facts, after_close=True, **rider)
    return await _paid_apart(tx, no, facts, after_close=True)


async def _paid_apart(
    tx: UnitOfWork, no: str, facts: PaymentFacts, *, after_close: bool
) -> OrderRecord | None:
    """The rows ``audit_of_paid`` rides in with, as statements of their own."""
    order = await tx.orders.mark_paid(no, 1980, facts, after_close=after_close)
    if order is not None:
        row = AuditRow(T0, "PAID", RIDER_RAW, "", no, facts.transaction_id, order.total_fee)
        await tx.audit.record(row)
    return order


async def _counts_and_locks(call: Call) -> None:
    await call("lock for event", lambda tx: tx.orders.lock_for_event(1))
    await call("lock unknown", lambda tx: tx.orders.lock_for_event(99))
    await call("payable v2", lambda tx: tx.orders.count_payable("v2"))
    await call("payable v3", lambda tx: tx.orders.count_payable("v3"))
    values = {"out_refund_no": "R3", "order_id": 5, "refund_fee": 1, "reason": None}
    lease = dt.timedelta(minutes=1)
    await call(
        "open refund", lambda tx: tx.refunds.add({**values, "idempotency_key": "k5"}, "t", lease)
    )
    await call("open refunds v2", lambda tx: tx.refunds.count_open("v2"))
    await call("open refunds v3", lambda tx: tx.refunds.count_open("v3"))
    await call("refunds by status", lambda tx: tx.refunds.count_by_status())


async def _prune_and_limit(call: Call) -> None:
    await call(
        "refused notify", lambda tx: tx.audit.record_refused(T0, "BAD_SIGNATURE", "<xml/>", "sign")
    )
    await call("prune, too recent", lambda tx: tx.audit.prune(REFUSED_VERDICTS, T0))
    later = T0 + dt.timedelta(seconds=1)
    await call("prune refused", lambda tx: tx.audit.prune(REFUSED_VERDICTS, later))
    window = int(T0.timestamp())
    for step, key, start in (
        ("login", "login:ip:10.0.0.1", window),
        ("login again", "login:ip:10.0.0.1", window),
        ("any login", "login:all", window),
        ("login, next window", "login:ip:10.0.0.1", window + 60),
    ):
        await call(step, lambda tx, key=key, start=start: tx.limits.hit(key, start))
    await call("forget windows", lambda tx: tx.limits.prune(window + 60))
    await call("forget no window", lambda tx: tx.limits.prune(window + 60))


async def _events(call: Call) -> EventRecord:
    data = '{"order":{"id":3}}'
    await call("add event", lambda tx: tx.events.add(EventType.ORDER_CLOSED.value, 3, data))
    kind = EventType.REFUND_SUCCEEDED.value
    await call("add refund event", lambda tx: tx.events.add(kind, 1, data))
    first: EventRecord = await call("event by id", lambda tx: tx.events.by_id(1))
    await call("unknown event", lambda tx: tx.events.by_id(999))
    await call("by public id", lambda tx: tx.events.by_public_id(first.public_id))
    await call("unknown public id", lambda tx: tx.events.by_public_id("evt_nope"))
    return first


async def _deliveries(call: Call) -> None:
    assert await call("due", lambda tx: tx.webhooks.has_due(1)) is True
    await call("due, no endpoint", lambda tx: tx.webhooks.has_due(99))
    claimed = await call("claim", lambda tx: _claim(tx, 1, 2, "w1"))
    assert len(claimed) == 2, claimed  # the events of "pay" and "paid after close"
    delivered, retried = claimed
    await call("claim, cap reached", lambda tx: _claim(tx, 1, 2, "w2"))
    await call("claim, no endpoint", lambda tx: _claim(tx, 99, 2, "w2"))
    ok, failed = AttemptOutcome(200, 12, "ok"), AttemptOutcome(500, 30, "oops")
    await call("delivered", lambda tx: tx.webhooks.record_attempt(delivered, ok, None))
    retry_at = T0 + dt.timedelta(days=1)
    await call("retry", lambda tx: tx.webhooks.record_attempt(retried, failed, retry_at))
    more = await call("claim more", lambda tx: _claim(tx, 1, 3, "w3"))
    await call("due after the claims", lambda tx: tx.webhooks.has_due(1))
    lost = dataclasses.replace(more[0], lease_token="w0")  # another worker holds it now
    timeout = AttemptOutcome(None, 5000, "", "TimeoutError")
    await call("lease lost", lambda tx: tx.webhooks.record_attempt(lost, timeout, retry_at))
    await call("deliveries", lambda tx: tx.webhooks.deliveries_of(1, 10))
    await call("newest delivery", lambda tx: tx.webhooks.deliveries_of(1, 1))
    await call("no deliveries", lambda tx: tx.webhooks.deliveries_of(99, 10))
    await call("attempts", lambda tx: tx.webhooks.attempts_of(lost.id))
    await call("no attempts", lambda tx: tx.webhooks.attempts_of(999))
    await call("backlog", lambda tx: tx.webhooks.backlog())


async def _claim(tx: UnitOfWork, endpoint_id: int, cap: int, token: str) -> list[DeliveryRecord]:
    # Sorted: the claim's UPDATE ... RETURNING has no order of its own.
    found = await tx.webhooks.claim(endpoint_id, cap, token, dt.timedelta(minutes=1))
    return sorted(found, key=lambda delivery: delivery.id)


async def _endpoint_health(call: Call) -> None:
    # After 0 s: failing since an earlier transaction's moment, so past the cut now.
    hour, now = dt.timedelta(hours=1), dt.timedelta(0)
    await call("failing", lambda tx: tx.webhooks.endpoint_failed(1, hour))
    await call("failing too long", lambda tx: tx.webhooks.endpoint_failed(1, now))
    await call("failing, disabled", lambda tx: tx.webhooks.endpoint_failed(1, now))
    await call("other failing", lambda tx: tx.webhooks.endpoint_failed(2, hour))
    await call("other recovered", lambda tx: tx.webhooks.endpoint_succeeded(2))
    await call("recovered, disabled", lambda tx: tx.webhooks.endpoint_succeeded(1))


async def _endpoint_admin(call: Call, first: EventRecord) -> None:
    late = {"url": "https://d.example/hook", "events": ",order.paid,", "secret": "sealed d"}
    await call("late endpoint", lambda tx: tx.webhooks.add_endpoint(late))
    await call("redeliver", lambda tx: tx.events.redeliver(first))
    await call("endpoint", lambda tx: tx.webhooks.endpoint(1))
    await call("unknown endpoint", lambda tx: tx.webhooks.endpoint(99))
    enable = {"enabled": True, "failing_since": None, "disabled_reason": None}
    await call("enable", lambda tx: tx.webhooks.update_endpoint(3, enable))
    await call("wake", lambda tx: tx.webhooks.wake(3))
    await call("wake retried", lambda tx: tx.webhooks.wake(1))
    await call("wake unknown", lambda tx: tx.webhooks.wake(99))
    rotated = {
        "secret": "sealed b2",
        "previous_secret": "sealed b",
        "previous_secret_expires_at": T0,
    }
    await call("rotate", lambda tx: tx.webhooks.update_endpoint(2, rotated))
    await call("update unknown", lambda tx: tx.webhooks.update_endpoint(99, {"url": "https://x"}))
    await call("enabled endpoints", _enabled_endpoints)
    await call("every endpoint", lambda tx: tx.webhooks.all_endpoints())
    doomed = await call("doomed endpoint", lambda tx: tx.webhooks.add_endpoint(late))
    await call("delete endpoint", lambda tx: tx.webhooks.delete_endpoint(doomed.id))
    await call("delete again", lambda tx: tx.webhooks.delete_endpoint(doomed.id))


async def _enabled_endpoints(tx: UnitOfWork) -> list[EndpointRecord]:
    # Sorted: the statement has no ORDER BY (the worker walks them all).
    return sorted(await tx.webhooks.enabled_endpoints(), key=lambda endpoint: endpoint.id)


async def _feed(call: Call) -> None:
    start = (-1, 0)  # what the feed starts from without a cursor
    everything = await call("feed", lambda tx: tx.events.feed(start, None, 100))
    page = await call("feed, a page", lambda tx: tx.events.feed(start, None, 2))
    cursor = (page[-1].txid, page[-1].id)
    await call("feed after the page", lambda tx: tx.events.feed(cursor, None, 100))
    kinds = (EventType.ORDER_PAID.value, EventType.ORDER_CLOSED.value)
    await call("feed of types", lambda tx: tx.events.feed(start, kinds, 100))
    await call("feed of types after", lambda tx: tx.events.feed(cursor, kinds, 100))
    end = (everything[-1].txid, everything[-1].id)
    await call("feed at the end", lambda tx: tx.events.feed(end, None, 100))


_FEED_CAUGHT_UP = text(
    "SELECT coalesce(max(txid), 0) < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    " FROM outbox_events"
)


async def _feed_caught_up(engine: AsyncEngine) -> None:
    """Wait until the feed's watermark is past every event. It holds back events newer than
    the oldest transaction running anywhere on the server (transaction ids are cluster-wide:
    another suite's open transaction delays it), which would make one run see fewer."""
    deadline = time.monotonic() + 60
    while True:
        async with engine.connect() as conn:
            if await conn.scalar(_FEED_CAUGHT_UP):
                return
        assert time.monotonic() < deadline, "a transaction on the server held the feed back"
        await asyncio.sleep(0.1)


async def _tables(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    found = {}
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = await conn.execute(text(f"SELECT * FROM {table.name} ORDER BY 1"))
            found[table.name] = [tuple(_plain(v) for v in row) for row in rows]
    found["outbox_events"] = [_outbox_row(row) for row in found["outbox_events"]]
    return found


def _outbox_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """An event with its random id and transaction id set aside, its snapshot's stamped times
    made placeholders (the rows it snapshots are compared on their own)."""
    event_id, _, kind, order_id, data, _, created_at = row
    return (event_id, kind, order_id, _snapshot(data), created_at)


def _event(event: EventRecord) -> tuple[Any, ...]:
    """An event as the repository returns it, compared as its row is (``_outbox_row``): its
    transaction id differs between runs (the server's ids only grow), and its snapshot is
    PostgreSQL's ``to_jsonb`` text where the payment was folded, ``json.dumps`` elsewhere."""
    assert event.txid > 0, event  # PostgreSQL's id of the writing transaction, not SQLite's 0
    plain = (event.id, event.public_id, event.type, event.order_id, event.created_at)
    return ("EventRecord", _plain(plain), _snapshot(event.data))


def _snapshot(data: str) -> list[tuple[str, Any]]:
    moments = {
        name: MOMENT if isinstance(value, str) and _is_stamp(value) else value
        for part in json.loads(data).values()
        for name, value in part.items()
    }
    return sorted(moments.items())


def _is_stamp(value: str) -> bool:
    try:
        return dt.datetime.fromisoformat(value).year != T0.year
    except ValueError:
        return False


def _plain(value: Any) -> Any:
    """Results as comparable plain values; stamped times and random public ids become a
    placeholder once checked."""
    if isinstance(value, EventRecord):
        return _event(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, _plain(dataclasses.astuple(value)))
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dt.datetime):
        assert value.utcoffset() == dt.timedelta(0), value
        return value if value.year == T0.year else MOMENT
    if isinstance(value, str) and value.startswith("evt_"):
        # An event's public id (``new_public_id``: random), in events and in deliveries_of.
        assert _PUBLIC_ID.fullmatch(value), value
        return PUBLIC_ID
    return value
