"""A worker killed (``kill -9``) mid-storm: every notify that was acknowledged is in the
database, nothing is half-written, and WeChat's retries settle the rest.

On both API versions; on v3 the unpaid orders get no notifies at all, since v3 notifies only
successes (PROTOCOL.md §8.5) and a failed attempt is v2's alone."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.plugins.simulator import SimulatorHandle
from tests.reliability.conftest import StartServices
from tests.reliability.ledger import compare_with_wechat
from tests.reliability.scenario import (
    Delivery,
    Notify,
    PayVersion,
    PlacedOrder,
    orders_paid_at_wechat,
    post_notifies,
    record_figures,
    retry_until_acknowledged,
    shuffled,
)

pytestmark = pytest.mark.reliability

ORDERS = 200
PAID = 150
COPIES = 10
KILL_AFTER = 800  # replies


def notifies_for(
    version: PayVersion, orders: list[PlacedOrder], paid: dict[str, str]
) -> list[Notify]:
    notifies = []
    for order in orders:
        if order.out_trade_no in paid:
            notifies += [version.paid_notify(order, paid[order.out_trade_no])] * COPIES
        elif failed := version.failed_notify(order):
            notifies += [failed] * 2
    return shuffled(notifies, seed=11)


async def test_killed_worker_loses_nothing_acknowledged_and_half_writes_nothing(
    start_services: StartServices,
    wechat: SimulatorHandle,
    api_version: PayVersion,
    http: httpx.AsyncClient,
    engine: AsyncEngine,
) -> None:
    [service] = start_services(count=1, workers=2)
    orders, paid = await orders_paid_at_wechat(
        http, [service], wechat, users=5, orders=ORDERS, paid=PAID
    )
    notifies = notifies_for(api_version, orders, paid)
    killed: list[int] = []

    def strike(done: int) -> None:
        if done == KILL_AFTER:
            killed.append(service.kill_worker())

    deliveries = await post_notifies(notifies, [service.base_url], 50, during=strike)
    acknowledged_paid = {d.notify.out_trade_no for d in deliveries if _paid_and_acked(d)}
    paid_now = await _paid_orders(engine)
    started = time.monotonic()
    still_refused = await retry_until_acknowledged(notifies, [service.base_url])
    retry_seconds = time.monotonic() - started

    assert killed
    assert acknowledged_paid - paid_now == set()  # nothing acknowledged was lost
    assert still_refused == []
    ledger = await compare_with_wechat(engine, wechat, api_version.name)
    assert ledger.problems == []  # includes: no half-written payment, one PAID event each
    assert (ledger.our_paid, ledger.paid_events) == (PAID, PAID)
    record_figures(
        "worker killed",
        {
            "api_version": api_version.name,
            "orders": ORDERS,
            "paid_at_wechat": PAID,
            "notifies_posted": len(notifies),
            "killed_after_replies": KILL_AFTER,
            "no_answer": sum(d.status is None for d in deliveries),
            "server_errors": sum((d.status or 0) >= 500 for d in deliveries),
            "acknowledged_paid_orders": len(acknowledged_paid),
            "paid_in_db_before_retries": len(paid_now),
            "retry_seconds": round(retry_seconds, 1),
            "workers_after": len(service.worker_pids()),
            **ledger.figures(),
        },
    )


def _paid_and_acked(delivery: Delivery) -> bool:
    return delivery.notify.kind == "paid" and delivery.acknowledged


async def _paid_orders(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT out_trade_no FROM orders WHERE status = 'SUCCESS'"))
        return set(rows.scalars())
