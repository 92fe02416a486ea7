"""The refund notify (PROTOCOL.md §6.5): unsigned outside, encrypted inside, applied once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.simulator.messages import refund_notify_body
from app.wechat.xmlcodec import from_xml
from tests.conftest import ClientFactory
from tests.helpers import ADMIN, scalar
from tests.plugins.simulator import SimulatorHandle
from tests.refunds.support import order_row, paid_order, refund, refund_row

REFUND_NOTIFY = "/wechat/pay/refund-notify"
OK = {"return_code": "SUCCESS", "return_msg": "OK"}


async def accepted_refund(
    client: httpx.AsyncClient, simulator: SimulatorHandle, fee: int = 990
) -> dict[str, Any]:
    """A paid order with a refund WeChat has accepted (its notify goes nowhere)."""
    order = await paid_order(client, simulator, price_fen=990)
    accepted = await refund(client, order["out_trade_no"], fee)
    assert accepted.json()["status"] == "PROCESSING"
    return {
        **accepted.json(),
        "out_trade_no": order["out_trade_no"],
        "transaction_id": order["transaction_id"],
        "total_fee": 990,
    }


def notify_for(settings: Settings, accepted: dict[str, Any], **changes: Any) -> bytes:
    """The notify WeChat sends for ``accepted``, its ids and amounts as WeChat holds them."""
    names = ("out_trade_no", "transaction_id", "out_refund_no", "refund_id")
    ids = {name: accepted[name] for name in names} | {
        "total_fee": accepted["total_fee"],
        "refund_fee": accepted["refund_fee"],
    }
    return refund_notify_body(settings, **(ids | changes))


def reply_of(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/xml")
    return from_xml(response.content)


async def verdicts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT verdict, count(*) FROM payment_notifies GROUP BY verdict")
        )
        return {verdict: count for verdict, count in rows}


async def test_refund_notify_is_applied_once_however_often_it_comes(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    accepted = await accepted_refund(client, fresh_simulator)
    body = notify_for(settings, accepted)

    # WeChat's servers may deliver copies at the same instant (PROTOCOL.md §5).
    together = await asyncio.gather(*(client.post(REFUND_NOTIFY, content=body) for _ in range(6)))

    assert [reply_of(r) for r in together] == [OK] * 6
    row = await refund_row(engine, accepted["out_refund_no"])
    assert row["status"] == "SUCCESS"
    assert row["success_time"] is not None
    assert (await order_row(engine, accepted["out_trade_no"]))["refunded_fee"] == 990
    assert await verdicts(engine) == {"REFUND_APPLIED": 1, "REFUND_DUPLICATE": 5}


async def test_forged_or_foreign_refund_notifies_change_nothing(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    accepted = await accepted_refund(client, fresh_simulator)
    forged = [
        notify_for(settings, accepted, api_key="k" * 32),  # not encrypted with our key
        notify_for(settings, accepted, outer={"appid": "wx0000000000000000"}),
        notify_for(settings, accepted, outer={"req_info": "bm90IGVuY3J5cHRlZA=="}),
        notify_for(settings, accepted, outer={"return_code": "FAIL"}),
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><a>&e;</a></xml>',
        b"\xff\xfe not xml",
    ]

    replies = [await client.post(REFUND_NOTIFY, content=body) for body in forged]

    assert [r.status_code for r in replies] == [400] * len(forged)
    assert all(reply_of(r)["return_code"] == "FAIL" for r in replies)
    assert (await refund_row(engine, accepted["out_refund_no"]))["status"] == "PROCESSING"
    assert await verdicts(engine) == {"REFUND_REFUSED": len(forged)}
    assert settings.api_key.get_secret_value() not in "".join(r.text for r in replies)


async def test_refund_notify_that_contradicts_our_record_is_not_acknowledged(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    accepted = await accepted_refund(client, fresh_simulator, fee=300)
    contradictions = [
        {"refund_fee": 990},
        {"total_fee": 1990},
        {"refund_id": "50300000000000000000000000000"},
        {"transaction_id": "4200000000000000000000000000"},
        {"out_trade_no": "20261127000000NOSUCHORDER1"},
    ]

    replies = [
        await client.post(REFUND_NOTIFY, content=notify_for(settings, accepted, **change))
        for change in contradictions
    ]

    assert [reply_of(r)["return_code"] for r in replies] == ["FAIL"] * len(contradictions)
    assert (await refund_row(engine, accepted["out_refund_no"]))["status"] == "PROCESSING"
    order = await order_row(engine, accepted["out_trade_no"])
    assert (order["refunded_fee"], order["review_reason"]) == (300, "REFUND_CONFLICT")
    assert await verdicts(engine) == {"REFUND_MISMATCH": len(contradictions)}


async def test_unknown_refund_of_an_unknown_order_is_not_acknowledged(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    body = refund_notify_body(
        settings,
        out_trade_no="20261127000000NOSUCHORDER1",
        out_refund_no="RNOSUCHREFUND",
        total_fee=990,
        refund_fee=990,
    )

    reply = await client.post(REFUND_NOTIFY, content=body)

    assert reply_of(reply) == {"return_code": "FAIL", "return_msg": "REFUND_UNKNOWN"}
    assert await verdicts(engine) == {"REFUND_UNKNOWN": 1}


async def test_a_refund_made_outside_this_service_is_acknowledged_and_flagged(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    order = await paid_order(client, fresh_simulator)
    # Refunded by hand on the merchant platform: a refund number we never issued.
    body = refund_notify_body(
        settings,
        out_trade_no=order["out_trade_no"],
        transaction_id=order["transaction_id"],
        out_refund_no="RMANUAL0001",
        total_fee=990,
        refund_fee=500,
        refund_request_source="VENDOR_PLATFORM",
    )

    reply = await client.post(REFUND_NOTIFY, content=body)

    assert reply_of(reply) == OK
    review = await client.get("/api/v1/admin/orders/review", headers=ADMIN)
    assert [(o["out_trade_no"], o["review_reason"]) for o in review.json()] == [
        (order["out_trade_no"], "REFUND_OUTSIDE")
    ]
    assert await scalar(engine, "SELECT count(*) FROM refunds") == 0
    assert await verdicts(engine) == {"REFUND_OUTSIDE": 1}


async def test_a_closed_refund_gives_its_amount_back(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    accepted = await accepted_refund(client, fresh_simulator, fee=990)
    closed = notify_for(settings, accepted, refund_status="REFUNDCLOSE")

    replies = [await client.post(REFUND_NOTIFY, content=closed) for _ in range(2)]

    assert [reply_of(r) for r in replies] == [OK, OK]
    assert (await refund_row(engine, accepted["out_refund_no"]))["status"] == "REFUNDCLOSE"
    # Given back once, however often the notify came.
    assert (await order_row(engine, accepted["out_trade_no"]))["refunded_fee"] == 0


async def test_a_refund_that_could_not_reach_the_user_is_flagged_and_may_still_succeed(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    accepted = await accepted_refund(client, fresh_simulator)

    changed = await client.post(
        REFUND_NOTIFY, content=notify_for(settings, accepted, refund_status="CHANGE")
    )
    review = await client.get("/api/v1/admin/orders/review", headers=ADMIN)
    finished = await client.post(REFUND_NOTIFY, content=notify_for(settings, accepted))

    assert reply_of(changed) == OK
    assert [o["review_reason"] for o in review.json()] == ["REFUND_CHANGE"]
    assert reply_of(finished) == OK
    assert (await refund_row(engine, accepted["out_refund_no"]))["status"] == "SUCCESS"


async def test_refund_notify_during_a_database_outage_is_answered_fail_and_retried(
    client: httpx.AsyncClient,
    make_client: ClientFactory,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    accepted = await accepted_refund(client, fresh_simulator)
    body = notify_for(settings, accepted)
    down = await make_client(database_url="postgresql+asyncpg://nobody@127.0.0.1:9/gone")

    during_outage = await down.post(REFUND_NOTIFY, content=body)
    retry = await client.post(REFUND_NOTIFY, content=body)

    assert during_outage.status_code == 503
    assert reply_of(during_outage)["return_code"] == "FAIL"
    assert reply_of(retry) == OK
    assert (await refund_row(engine, accepted["out_refund_no"]))["status"] == "SUCCESS"
    assert await scalar(engine, "SELECT count(*) FROM payment_notifies") == 1
