"""The payment notify (issue 6): verified, applied exactly once, acknowledged after commit.

The simulator pays and posts real notifies to the service running under uvicorn.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.simulator.messages import payment_notify_body
from app.wechat.xmlcodec import from_xml
from tests.conftest import ClientFactory
from tests.helpers import add_product, create_order, login, prepay_id_of, scalar
from tests.plugins.service import LiveFactory
from tests.plugins.simulator import SimulatorHandle

NOTIFY = "/wechat/pay/notify"


async def paid_order(
    client: httpx.AsyncClient, simulator: SimulatorHandle, result: str = "SUCCESS"
) -> tuple[dict[str, str], dict[str, Any]]:
    auth = await login(client, simulator)
    order = await create_order(client, auth, await add_product(client))
    await simulator.pay(prepay_id_of(order), result)
    return auth, order


async def order_row(engine: AsyncEngine, out_trade_no: str, column: str) -> Any:
    return await scalar(
        engine,
        f"SELECT {column} FROM orders WHERE out_trade_no = :n",
        n=out_trade_no,
    )


# A notify as WeChat signs it (PROTOCOL.md §5), for hand-made cases.
signed_notify = payment_notify_body


async def order_and_notify(
    client: httpx.AsyncClient,
    simulator: SimulatorHandle,
    settings: Settings,
    fee: int,
    transaction_id: str,
) -> tuple[dict[str, Any], bytes]:
    """A new user's new order, and the paid notify WeChat would send for it."""
    auth = await login(client, simulator)
    order = await create_order(client, auth, await add_product(client, price_fen=fee))
    body = signed_notify(
        settings, out_trade_no=order["out_trade_no"], transaction_id=transaction_id, total_fee=fee
    )
    return order, body


def reply_of(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/xml")
    return from_xml(response.content)


async def test_paid_order_becomes_success_once(
    make_live_client: LiveFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    client = await make_live_client()
    auth, order = await paid_order(client, fresh_simulator)

    attempts = await fresh_simulator.wait_for_notifies(1, verdict="acknowledged")

    assert len(attempts) == 1
    assert "<return_code><![CDATA[SUCCESS]]></return_code>" in attempts[0]["reply"]
    no = order["out_trade_no"]
    shown = (await client.get(f"/api/v1/orders/{no}", headers=auth)).json()
    assert shown["status"] == "SUCCESS"
    wechat = {o["out_trade_no"]: o for o in await fresh_simulator.orders()}[no]
    assert shown["transaction_id"] == wechat["transaction_id"]
    assert shown["paid_at"] is not None
    assert await scalar(engine, "SELECT count(*) FROM order_events WHERE kind = 'PAID'") == 1
    assert await scalar(engine, "SELECT verdict FROM payment_notifies") == "PAID"


async def test_badly_signed_notify_is_refused_every_time_it_comes(
    make_live_client: LiveFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    client = await make_live_client()
    await fresh_simulator.set_fault("bad_signature", count=1)
    _, order = await paid_order(client, fresh_simulator)

    attempts = await fresh_simulator.wait_for_notifies(3)

    assert len(attempts) >= 3  # refused, so WeChat keeps retrying
    assert all(a["verdict"] != "acknowledged" and "FAIL" in a["reply"] for a in attempts)
    assert await order_row(engine, order["out_trade_no"], "status") == "NOTPAY"
    refused = await scalar(
        engine, "SELECT count(*) FROM payment_notifies WHERE verdict = 'BAD_SIGNATURE'"
    )
    assert refused >= 3
    assert await scalar(engine, "SELECT count(*) FROM order_events") == 0


async def test_tampered_amount_does_not_pay_and_flags_the_order(
    make_live_client: LiveFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    # Signed with the real key by the simulator: only the amount check can catch it.
    client = await make_live_client()
    await fresh_simulator.set_fault("tamper_amount", delta=-1)
    _, order = await paid_order(client, fresh_simulator)

    await fresh_simulator.wait_for_notifies(2)

    no = order["out_trade_no"]
    assert await order_row(engine, no, "status") == "NOTPAY"
    assert await order_row(engine, no, "review_reason") == "AMOUNT_MISMATCH"
    attempts = await fresh_simulator.notifies()
    assert all(a["verdict"] != "acknowledged" for a in attempts)
    assert await scalar(engine, "SELECT count(*) FROM order_events") == 0


async def test_failed_payment_is_recorded_and_the_order_stays_payable(
    make_live_client: LiveFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    client = await make_live_client()
    await fresh_simulator.set_fault("result_fail", count=1)
    auth, order = await paid_order(client, fresh_simulator)

    await fresh_simulator.wait_for_notifies(1, verdict="acknowledged")

    no = order["out_trade_no"]
    assert await order_row(engine, no, "status") == "NOTPAY"
    assert await scalar(engine, "SELECT verdict FROM payment_notifies") == "PAYMENT_FAILED"
    again = await client.post(f"/api/v1/orders/{no}/pay-params", headers=auth)
    assert again.status_code == 200


async def test_payment_after_close_is_recorded_and_flagged_for_refund_review(
    make_live_client: LiveFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    client = await make_live_client()
    auth = await login(client, fresh_simulator)
    order = await create_order(client, auth, await add_product(client))
    no = order["out_trade_no"]
    async with engine.begin() as conn:  # we closed it; the user had already paid
        from sqlalchemy import text

        await conn.execute(
            text("UPDATE orders SET status='CLOSED' WHERE out_trade_no=:n"), {"n": no}
        )
    await fresh_simulator.pay(prepay_id_of(order))

    await fresh_simulator.wait_for_notifies(1, verdict="acknowledged")

    assert await order_row(engine, no, "status") == "SUCCESS"
    assert await order_row(engine, no, "review_reason") == "PAID_AFTER_CLOSE"
    review = await client.get(
        "/api/v1/admin/orders/review", headers={"X-Admin-Token": "dev-admin-token"}
    )
    assert [o["out_trade_no"] for o in review.json()] == [no]


async def test_notify_for_another_merchant_is_refused(
    client: httpx.AsyncClient, settings: Settings, engine: AsyncEngine
) -> None:
    body = signed_notify(
        settings,
        appid="wx0000000000000000",
        out_trade_no="X1",
        transaction_id="4200000000000001",
        total_fee=1,
        cash_fee=1,
    )

    response = await client.post(NOTIFY, content=body)

    assert response.status_code == 400
    assert reply_of(response)["return_code"] == "FAIL"
    assert await scalar(engine, "SELECT verdict FROM payment_notifies") == "WRONG_MERCHANT"


async def test_notify_for_an_unknown_order_is_not_acknowledged(
    client: httpx.AsyncClient, settings: Settings, engine: AsyncEngine
) -> None:
    body = signed_notify(
        settings,
        out_trade_no="NOSUCHORDER1",
        transaction_id="4200000000000002",
        total_fee=1,
        cash_fee=1,
    )

    response = await client.post(NOTIFY, content=body)

    assert reply_of(response)["return_code"] == "FAIL"
    assert await scalar(engine, "SELECT verdict FROM payment_notifies") == "UNKNOWN_ORDER"
    assert await scalar(engine, "SELECT count(*) FROM orders") == 0


async def test_database_down_answers_fail_and_the_retry_succeeds(
    client: httpx.AsyncClient,
    make_client: ClientFactory,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    order, body = await order_and_notify(client, fresh_simulator, settings, 5, "4200000000000003")
    down = await make_client(database_url="postgresql+asyncpg://nobody@127.0.0.1:9/gone")

    during_outage = await down.post(NOTIFY, content=body)
    retry = await client.post(NOTIFY, content=body)

    assert during_outage.status_code == 503
    assert reply_of(during_outage)["return_code"] == "FAIL"
    assert reply_of(retry) == {"return_code": "SUCCESS", "return_msg": "OK"}
    assert await order_row(engine, order["out_trade_no"], "status") == "SUCCESS"


async def test_concurrent_identical_notifies_pay_once(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    _, body = await order_and_notify(client, fresh_simulator, settings, 7, "4200000000000004")

    replies = await asyncio.gather(*(client.post(NOTIFY, content=body) for _ in range(20)))

    assert all(reply_of(r)["return_code"] == "SUCCESS" for r in replies)
    assert await scalar(engine, "SELECT count(*) FROM order_events") == 1
    assert await scalar(engine, "SELECT count(*) FROM payment_notifies WHERE verdict='PAID'") == 1


async def test_transaction_id_already_used_by_another_order_is_flagged_not_paid(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    # Only a compromised key or a WeChat fault could produce this; money and records disagree.
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client, price_fen=3)
    first = await create_order(client, auth, product_id)
    second = await create_order(client, auth, product_id)
    paid, reused = (
        signed_notify(
            settings,
            out_trade_no=order["out_trade_no"],
            transaction_id="4200000000000000000000000077",
            total_fee=3,
        )
        for order in (first, second)
    )

    assert reply_of(await client.post(NOTIFY, content=paid))["return_code"] == "SUCCESS"
    response = await client.post(NOTIFY, content=reused)

    assert reply_of(response)["return_code"] == "FAIL"
    assert await order_row(engine, second["out_trade_no"], "status") == "NOTPAY"
    assert (
        await order_row(engine, second["out_trade_no"], "review_reason") == "TRANSACTION_CONFLICT"
    )
    assert (
        await scalar(
            engine, "SELECT count(*) FROM payment_notifies WHERE verdict = 'TRANSACTION_CONFLICT'"
        )
        == 1
    )


@pytest.mark.parametrize(
    "path",
    [NOTIFY, "/wechat/pay/refund-notify", "/wechat/pay/v3/notify", "/wechat/pay/v3/refund-notify"],
)
async def test_a_notify_url_answers_only_post(client: httpx.AsyncClient, path: str) -> None:
    # Plain routes (app.inbound.NotifyRoute), not FastAPI's: the same 405 as every route's.
    response = await client.get(path)

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
