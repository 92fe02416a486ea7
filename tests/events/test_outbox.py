"""Issue 13: one event per state change, written by the transaction that makes the change."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.eventdata import order_data
from app.events.payloads import as_json
from app.orders.outbox import close_and_record, pay_and_record
from app.orders.repository import PaymentFacts
from app.runtime import Runtime
from app.simulator.messages import payment_notify_body
from tests.conftest import RuntimeFactory
from tests.events.support import outbox, types_of
from tests.helpers import add_product, create_order, login, scalar
from tests.plugins.simulator import SimulatorHandle
from tests.refunds.support import paid_order, refund
from tests.refunds.test_refund_notify import REFUND_NOTIFY, accepted_refund, notify_for

NOTIFY = "/wechat/pay/notify"


async def new_order(client: httpx.AsyncClient, simulator: SimulatorHandle, fee: int = 990) -> dict:
    auth = await login(client, simulator)
    return await create_order(client, auth, await add_product(client, price_fen=fee))


async def test_concurrent_duplicate_notifies_write_one_order_paid_event(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
) -> None:
    order = await new_order(client, fresh_simulator)
    body = payment_notify_body(
        settings, out_trade_no=order["out_trade_no"], transaction_id="4200000001", total_fee=990
    )

    # PROTOCOL.md §5: WeChat may deliver the same notify several times at once.
    answers = await asyncio.gather(*(client.post(NOTIFY, content=body) for _ in range(6)))

    assert all(b"SUCCESS" in a.content for a in answers)
    [event] = await outbox(engine)
    assert event["type"] == "order.paid"
    data = event["data"]
    assert (data["out_trade_no"], data["status"], data["total_fee"]) == (
        order["out_trade_no"],
        "SUCCESS",
        990,
    )
    assert data["transaction_id"] == "4200000001"
    assert data["openid"] and data["product"]["id"] == order["product_id"]
    assert event["public_id"].startswith("evt_")
    # On PostgreSQL the payment's own statement wrote the event from the row it updated
    # (to_jsonb); it says exactly what the order record says.
    async with (await make_runtime()).db.statement() as tx:
        paid = await tx.orders.by_out_trade_no(order["out_trade_no"])
    assert paid is not None
    assert data == json.loads(as_json(order_data(paid)))


async def test_an_amount_mismatch_reported_again_and_again_raises_one_review_event(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    order = await new_order(client, fresh_simulator)
    body = payment_notify_body(
        settings, out_trade_no=order["out_trade_no"], transaction_id="4200000002", total_fee=1
    )

    for _ in range(3):
        await client.post(NOTIFY, content=body)

    [event] = await outbox(engine)
    assert event["type"] == "order.review_required"
    assert event["data"]["review_reason"] == "AMOUNT_MISMATCH"
    assert event["data"]["status"] == "NOTPAY"


async def test_no_event_is_written_when_the_change_rolls_back(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
) -> None:
    order = await new_order(client, fresh_simulator)
    runtime: Runtime = await make_runtime()
    facts = PaymentFacts("4200000003", None, 990, "CMC")

    with pytest.raises(RuntimeError):
        async with runtime.db.transaction() as tx:
            assert await pay_and_record(tx, order["out_trade_no"], 990, facts, after_close=False)
            raise RuntimeError("the rest of the transaction failed")

    assert await outbox(engine) == []
    no = order["out_trade_no"]
    assert await scalar(engine, "SELECT status FROM orders WHERE out_trade_no = :n", n=no) == (
        "NOTPAY"
    )


async def test_closing_twice_writes_one_order_closed_event_and_a_late_payment_two_more(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
) -> None:
    no = (await new_order(client, fresh_simulator))["out_trade_no"]
    runtime: Runtime = await make_runtime()

    for _ in range(2):
        async with runtime.db.transaction() as tx:
            await close_and_record(tx, no)
    # The user paid just before our close reached WeChat: recorded, and flagged.
    async with runtime.db.transaction() as tx:
        facts = PaymentFacts("4200000004", None, 990, "CMC")
        assert await pay_and_record(tx, no, 990, facts, after_close=True)

    events = await outbox(engine)
    assert [e["type"] for e in events] == ["order.closed", "order.paid", "order.review_required"]
    assert events[0]["data"]["status"] == "CLOSED"
    assert events[2]["data"]["review_reason"] == "PAID_AFTER_CLOSE"
    # The ids are the events' ``sequence``: increasing across one order's events.
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("SUCCESS", ["refund.succeeded"]),
        ("REFUNDCLOSE", ["refund.failed"]),
        ("CHANGE", ["refund.abnormal", "order.review_required"]),
    ],
)
async def test_a_refund_notify_raises_its_event_once_however_often_it_comes(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
    status: str,
    expected: list[str],
) -> None:
    accepted = await accepted_refund(client, fresh_simulator)
    body = notify_for(settings, accepted, refund_status=status)

    await asyncio.gather(*(client.post(REFUND_NOTIFY, content=body) for _ in range(4)))

    # The order.paid before it came from the order query that recorded the payment.
    assert await types_of(engine) == ["order.paid", *expected]
    refund_event = (await outbox(engine))[1]["data"]
    assert refund_event["out_refund_no"] == accepted["out_refund_no"]
    assert refund_event["out_trade_no"] == accepted["out_trade_no"]
    assert refund_event["status"] == status
    assert refund_event["openid"] and refund_event["product"]["description"]


async def test_a_refund_wechat_refuses_raises_refund_failed(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    order = await paid_order(client, fresh_simulator)
    await fresh_simulator.set_fault("business_error", endpoint="refund", err_code="PARAM_ERROR")

    answer = await refund(client, order["out_trade_no"], 990)

    assert answer.status_code == 502, answer.text  # WeChat's refusal, passed through
    assert await types_of(engine) == ["order.paid", "refund.failed"]
