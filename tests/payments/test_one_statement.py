"""The paid notify as one statement on PostgreSQL: the payment, its events and its audit row
ride together (``OrderRepository.mark_paid``'s riders), so they commit or fail together."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.orders.repository import Folded, PaymentFacts, PaymentView
from app.payments.repository import audit_of_paid, audit_params
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


async def test_a_payment_that_does_not_move_the_order_says_why_in_the_same_statement(
    db: Database, engine: AsyncEngine
) -> None:
    """The order as the statement found it comes back with "not paid" (``PaymentService``
    tells a repeat from anything else by it, without another read)."""
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
