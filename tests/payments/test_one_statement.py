"""The paid notify as one statement on PostgreSQL: the payment, its events and its audit row
ride together (``OrderRepository.mark_paid``'s riders), so they commit or fail together."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.gateway import PaymentResult
from app.orders.repository import Folded, OrderRepository, PaymentFacts, PaymentView
from app.payments.repository import audit_of_paid, audit_params
from app.payments.service import AuditRecord, PaymentService, Verdict
from app.uow import Database, open_database
from tests.db import order_values
from tests.helpers import scalar

NOW = dt.datetime(2026, 11, 30, 4, 0, tzinfo=dt.UTC)
FACTS = PaymentFacts("4200000000000000000000000001", NOW, 990, "OTHERS")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url, pool_size=2)
    yield database
    await database.close()


async def an_order(db: Database, no: str) -> None:
    async with db.statement() as tx:
        await tx.products.add("套餐", "短信平台-短信套餐购买", 990)
        user = await tx.auth.upsert_user(f"o-{no}", None, "sealed")
        values = order_values(
            no, user_id=user, openid=f"o-{no}", time_expire=NOW + dt.timedelta(hours=2)
        )
        await tx.orders.insert_priced(values, 10_000)


async def pay(db: Database, no: str, facts: PaymentFacts, raw: Any) -> object:
    async with db.statement() as tx:
        return await tx.orders.mark_paid(
            no, 990, facts, after_close=False,
            riders=(audit_of_paid,), rider_params=audit_params(NOW, raw),
        )  # fmt: skip


def postgresql_only(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("riders are PostgreSQL CTEs (the PostgreSQL pass runs this)")


async def test_the_audit_row_rides_in_the_payment_once(db: Database, engine: AsyncEngine) -> None:
    postgresql_only(db)
    await an_order(db, "N1")

    assert await pay(db, "N1", FACTS, '{"a": 1}') is not None
    assert await pay(db, "N1", FACTS, '{"a": 1}') is None  # the duplicate moves nothing

    row = "SELECT verdict, raw, detail, out_trade_no, transaction_id, total_fee"
    audit = f"{row} FROM payment_notifies"
    async with engine.connect() as conn:
        rows = [tuple(r) for r in (await conn.exec_driver_sql(audit)).all()]
    assert rows == [("PAID", '{"a": 1}', "", "N1", FACTS.transaction_id, 990)]
    assert await scalar(engine, "SELECT count(*) FROM outbox_events") == 1
    assert await scalar(engine, "SELECT count(*) FROM order_events") == 1


async def test_a_rider_that_fails_takes_the_payment_with_it(
    db: Database, engine: AsyncEngine
) -> None:
    postgresql_only(db)
    await an_order(db, "N2")

    with pytest.raises(Exception, match="raw"):  # payment_notifies.raw is NOT NULL
        await pay(db, "N2", FACTS, None)

    assert await scalar(engine, "SELECT status FROM orders") == "NOTPAY"
    for table in ("payment_notifies", "outbox_events", "order_events"):
        assert await scalar(engine, f"SELECT count(*) FROM {table}") == 0


async def test_sqlite_refuses_riders_rather_than_drop_their_rows(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite's statements cannot carry data-modifying CTEs")
    await an_order(db, "N3")

    with pytest.raises(ValueError, match="riders"):
        await pay(db, "N3", FACTS, "{}")


async def fold(db: Database, no: str, fee: int = 990) -> tuple[Folded, PaymentView | None]:
    async with db.statement() as tx:
        return await tx.orders.pay_in_one_statement(
            no, fee, FACTS, (audit_of_paid,), audit_params(NOW, "{}")
        )


async def test_a_payment_that_does_not_move_the_order_returns_it_as_its_statement_found_it(
    db: Database, engine: AsyncEngine
) -> None:
    """The order as the statement's snapshot had it comes back with "not paid"
    (``PaymentService`` tells a repeat from anything else by it, without another read)."""
    postgresql_only(db)
    await an_order(db, "N4")
    await an_order(db, "N5")
    async with db.statement() as tx:
        await tx.orders.mark_closed("N5")
    unpaid, closed = await view(db, "N4"), await view(db, "N5")
    assert unpaid is not None and (unpaid.status, unpaid.transaction_id) == ("NOTPAY", None)
    assert closed is not None and closed.status == "CLOSED"

    assert await fold(db, "N4", fee=1) == (Folded.NOT_PAID, unpaid)  # another amount
    assert await fold(db, "N5") == (Folded.NOT_PAID, closed)
    assert await fold(db, "NO_SUCH_ORDER") == (Folded.NOT_PAID, None)
    assert await fold(db, "N4") == (Folded.PAID, None)
    paid = PaymentView(unpaid.id, "SUCCESS", 990, FACTS.transaction_id)
    assert await fold(db, "N4") == (Folded.NOT_PAID, paid)  # WeChat repeating itself
    # Only the payment wrote rows: its audit row and its event, once.
    assert await scalar(engine, "SELECT count(*) FROM payment_notifies") == 1
    assert await scalar(engine, "SELECT count(*) FROM order_events") == 1


async def view(db: Database, no: str) -> PaymentView | None:
    async with db.statement() as tx:
        return await tx.orders.payment_view(no)


RESULT = PaymentResult("N6", FACTS.transaction_id, 990, 990, "OTHERS", NOW)


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The order numbers ``payment_view`` is asked for, each time it is (the real read runs)."""
    reads: list[str] = []
    real = OrderRepository.payment_view

    async def counted(self: OrderRepository, out_trade_no: str) -> PaymentView | None:
        reads.append(out_trade_no)
        return await real(self, out_trade_no)

    monkeypatch.setattr(OrderRepository, "payment_view", counted)
    return reads


async def test_a_repeated_notify_is_told_apart_without_reading_the_order_again(
    db: Database, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgresql_only(db)
    await an_order(db, "N6")
    reads = count_reads(monkeypatch)
    service = PaymentService(db)

    assert await service.apply_paid(RESULT, AuditRecord("{}", NOW)) is Verdict.PAID
    assert await service.apply_paid(RESULT, AuditRecord("{}", NOW)) is Verdict.DUPLICATE
    assert reads == []
    verdicts = "SELECT string_agg(verdict, ',' ORDER BY id) FROM payment_notifies"
    assert await scalar(engine, verdicts) == "PAID,DUPLICATE"


async def test_a_notify_that_waited_on_the_payment_it_repeats_is_a_duplicate(
    db: Database, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its statement waits on the row another transaction is paying, then finds nothing to
    move, while its snapshot still shows the order unpaid: the view says nothing then, and
    the notify goes the transaction's way, which reads the order as committed."""
    postgresql_only(db)
    await an_order(db, "N6")
    reads = count_reads(monkeypatch)
    service = PaymentService(db)

    async with db.transaction() as tx:
        assert await tx.orders.mark_paid("N6", 990, FACTS, after_close=False) is not None
        notify = asyncio.create_task(service.apply_paid(RESULT, AuditRecord("{}", NOW)))
        await waiting_on_a_lock(engine)
    assert await notify is Verdict.DUPLICATE
    assert reads == ["N6"]  # the transaction's read, not a second one
    assert await scalar(engine, "SELECT verdict FROM payment_notifies") == "DUPLICATE"
    assert await scalar(engine, "SELECT count(*) FROM order_events") == 1


async def waiting_on_a_lock(engine: AsyncEngine) -> None:
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    for _ in range(500):
        if await scalar(engine, waiting):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the notify never waited on the paid row")
