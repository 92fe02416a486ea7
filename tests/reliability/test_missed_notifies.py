"""Missed notifies: WeChat's deliveries never arrive; the sweep, running in two processes at
once, settles every paid order from order query and closes the expired unpaid ones. On both
API versions (v3: order query and close on their v3 paths, PROTOCOL.md §8.7)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import scalar
from tests.plugins.simulator import SimulatorHandle
from tests.reliability.conftest import StartServices
from tests.reliability.ledger import compare_with_wechat
from tests.reliability.scenario import PayVersion, orders_paid_at_wechat, record_figures

pytestmark = pytest.mark.reliability

ORDERS = 120
PAID = 80
EXPIRED = 10  # unpaid orders whose time_expire has passed: the sweep closes them


async def test_sweep_settles_every_paid_order_whose_notifies_were_lost(
    start_services: StartServices,
    wechat: SimulatorHandle,
    api_version: PayVersion,
    http: httpx.AsyncClient,
    engine: AsyncEngine,
) -> None:
    services = start_services(
        count=2,
        # Nothing listens there: every notify is lost, whichever version sends it.
        WXPAY_NOTIFY_URL="http://127.0.0.1:9/wechat/pay/notify",
        WXPAY_V3_NOTIFY_URL="http://127.0.0.1:9/wechat/pay/v3/notify",
        WXPAY_SWEEP_INTERVAL_SECONDS=0.5,
        WXPAY_RECONCILE_AFTER_MINUTES=1,
        WXPAY_SWEEP_BATCH_SIZE=15,
    )
    orders, _ = await orders_paid_at_wechat(
        http, services, wechat, users=5, orders=ORDERS, paid=PAID
    )
    expired = [o.out_trade_no for o in orders[PAID : PAID + EXPIRED]]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE orders SET time_expire = now() - interval '1 minute'"
                " WHERE out_trade_no = ANY(:n)"
            ),
            {"n": expired},
        )
        await conn.execute(text("UPDATE orders SET created_at = created_at - interval '2 minutes'"))

    started = time.monotonic()
    settled = await _wait_until_settled(engine, PAID, EXPIRED, within=90)
    elapsed = time.monotonic() - started

    deliveries = await wechat.notifies()
    assert deliveries and all(d["verdict"] != "acknowledged" for d in deliveries)
    assert settled == (PAID, EXPIRED)
    ledger = await compare_with_wechat(engine, wechat, api_version.name)
    assert ledger.problems == []
    wechat_closed = sum(o["trade_state"] == "CLOSED" for o in await wechat.orders())
    assert wechat_closed == EXPIRED
    assert await scalar(engine, "SELECT count(*) FROM orders WHERE status = 'NOTPAY'") == (
        ORDERS - PAID - EXPIRED
    )
    record_figures(
        "missed notifies",
        {
            "api_version": api_version.name,
            "orders": ORDERS,
            "paid_at_wechat": PAID,
            "expired_unpaid": EXPIRED,
            "notify_deliveries_failed": len(deliveries),
            "sweeping_processes": len(services),
            "seconds_to_settle": round(elapsed, 1),
            "closed_at_wechat": wechat_closed,
            **ledger.figures(),
        },
    )


async def _wait_until_settled(
    engine: AsyncEngine, paid: int, closed: int, within: float
) -> tuple[int, int]:
    deadline = time.monotonic() + within
    while True:
        now = (
            await scalar(engine, "SELECT count(*) FROM orders WHERE status = 'SUCCESS'"),
            await scalar(engine, "SELECT count(*) FROM orders WHERE status = 'CLOSED'"),
        )
        if now == (paid, closed) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.25)
