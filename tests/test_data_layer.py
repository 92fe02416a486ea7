"""The data layer: every repository method, run on both drivers against PostgreSQL, agrees.

Each statement is written once in Core; on PostgreSQL the service runs it on asyncpg (compiled
once, ``app.sql``), SQLite runs it through SQLAlchemy. Here the same script of repository calls
runs through each driver on the same PostgreSQL database, and what each call returned and what
the tables hold afterwards must be equal. A third run takes the portable way on PostgreSQL
(``fold_writes=False``: each write its own statement, as on SQLite), so the one PostgreSQL-only
optimisation, writes folded into one statement, is held to the same outcome. Times the
repositories stamp with ``utcnow()`` differ between runs; they are checked for being aware UTC
and then compared as a placeholder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import Base, create_engine
from app.gateway import PaymentResult
from app.orders.repository import DuplicateOrder, DuplicateTransaction, PaymentFacts
from app.orders.states import ReviewReason
from app.payments.repository import AuditRow
from app.payments.service import AuditRecord, PaymentService
from app.refunds.repository import DuplicateRefund
from app.refunds.states import RefundStatus
from app.uow import Database, PgDatabase, SqlAlchemyDatabase, UnitOfWork
from tests.db import order_values, truncate_all

T0 = dt.datetime(2020, 5, 1, 8, 0, tzinfo=dt.UTC)  # a year no stamped time falls in
MOMENT = "<aware utc>"

Script = Callable[[Database], Awaitable[list[tuple[str, Any]]]]


@pytest.fixture
async def drivers(database_url: str, engine: AsyncEngine) -> AsyncIterator[dict[str, Database]]:
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("compares the two drivers on PostgreSQL (the PostgreSQL pass runs it)")
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    both: dict[str, Database] = {
        "asyncpg": PgDatabase(pool, dsn),
        "sqlalchemy": SqlAlchemyDatabase(create_engine(database_url)),
        "asyncpg, writes apart": PgDatabase(pool, dsn, fold_writes=False),
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
        calls = await _script(db)
        seen[name] = (calls, await _tables(engine))

    calls_pg, tables_pg = seen["asyncpg"]
    for other in ("sqlalchemy", "asyncpg, writes apart"):
        calls, tables = seen[other]
        for (step, on_pg), (_, on_other) in zip(calls_pg, calls, strict=True):
            assert on_pg == on_other, (other, step)
        assert tables_pg == tables, other
    # The script did reach every table it means to (a vacuous run would compare empty lists).
    assert {name for name, rows in tables_pg.items() if rows} >= {
        "users", "auth_sessions", "products", "orders", "order_events", "refunds",
        "payment_notifies",
    }  # fmt: skip


async def _script(db: Database) -> list[tuple[str, Any]]:
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
    await _orders(call)
    await _refunds(call)
    await _notify_payments(db, calls)
    await call(
        "audit", lambda tx: tx.audit.record(AuditRow(T0, "PAID", "{}", "ok", "N1", "T1", 990))
    )
    async with db.statement() as tx:
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
    moments = {
        name: MOMENT if isinstance(value, str) and _is_stamp(value) else value
        for part in json.loads(data).values()
        for name, value in part.items()
    }
    return (event_id, kind, order_id, sorted(moments.items()), created_at)


def _is_stamp(value: str) -> bool:
    try:
        return dt.datetime.fromisoformat(value).year != T0.year
    except ValueError:
        return False


def _plain(value: Any) -> Any:
    """Results as comparable plain values; stamped times become a placeholder once checked."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, _plain(dataclasses.astuple(value)))
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dt.datetime):
        assert value.utcoffset() == dt.timedelta(0), value
        return value if value.year == T0.year else MOMENT
    return value
