"""Refund storm: racing refunds on every order through two processes while refund calls fail
upstream (timeouts that WeChat still acts on, 5xx, malformed XML, SYSTEMERROR): now and then
for anyone, and every time for one order in five until the storm ends. Each refund request gets
a clear answer; refunds never exceed what was paid, and a duplicate in flight never turns a
valid refund away; a repeated Idempotency-Key never refunds twice; after the sweeps (both
processes) and WeChat's refund notifies, every refund is settled and our books equal WeChat's
to the fen. On both API versions (v3: ``/v3/refund/domestic/refunds``, its query and its
``REFUND.SUCCESS`` notifies, PROTOCOL.md §8.7)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import ADMIN, scalar
from tests.plugins.simulator import SimulatorHandle
from tests.reliability.conftest import StartServices
from tests.reliability.ledger import compare_with_wechat
from tests.reliability.scenario import (
    PayVersion,
    PlacedOrder,
    orders_paid_at_wechat,
    record_figures,
)

pytestmark = pytest.mark.reliability

ORDERS = 60
BATCH = 10  # orders per fault switch
UNREACHABLE = 2  # orders per batch whose refund calls all fail while the storm lasts
FAULTS: list[dict[str, Any]] = [
    {"name": "upstream_timeout", "seconds": 1.0},  # WeChat refunds, the answer comes too late
    {"name": "upstream_5xx", "status": 502},
    {"name": "malformed_xml"},
    {"name": "systemerror"},
]
CLEAR = {201, 202, 409, 502, 503}


async def test_racing_refunds_under_upstream_faults_settle_to_wechats_books(
    start_services: StartServices,
    wechat: SimulatorHandle,
    api_version: PayVersion,
    http: httpx.AsyncClient,
    engine: AsyncEngine,
) -> None:
    services = start_services(
        count=2,
        WXPAY_HTTP_READ_TIMEOUT=0.5,
        WXPAY_WECHAT_MAX_ATTEMPTS=2,
        WXPAY_SWEEP_INTERVAL_SECONDS=0.5,
        WXPAY_RECONCILE_AFTER_MINUTES=1,
    )
    urls = [s.base_url for s in services]
    orders, _ = await orders_paid_at_wechat(
        http, services, wechat, users=5, orders=ORDERS, paid=ORDERS, price_fen=1000
    )
    paid = await wechat.wait_for_notifies(ORDERS, verdict="acknowledged", within=60)
    # Refunds need paid orders: without this, every refund is a clear 409 and the storm proves
    # nothing (the ledger would then name each order a lost payment).
    assert len(paid) == ORDERS, Counter(
        (d["verdict"], d["status"], (d["reply"] or "")[:60]) for d in await wechat.notifies()
    )

    endpoint = api_version.endpoint("refund")
    replies: list[tuple[PlacedOrder, str, httpx.Response]] = []
    for start in range(0, ORDERS, BATCH):
        fault = FAULTS[(start // BATCH) % len(FAULTS)]
        await wechat.set_fault(endpoint=endpoint, count=_budget(start // BATCH), **fault)
        batch = orders[start : start + BATCH]
        for order in batch[:UNREACHABLE]:  # these fail every time, until the faults are cleared
            await wechat.set_fault(endpoint=endpoint, out_trade_no=order.out_trade_no, **fault)
        replies += await asyncio.gather(
            *(
                _request(http, urls[(i + k) % 2], o, k)
                for i, o in enumerate(batch)
                for k in range(4)
            )
        )
    await wechat.clear_faults()

    unclear = [(r.status_code, r.text[:100]) for _, _, r in replies if not _clear(r)]
    assert unclear == []
    assert _same_key_same_refund(replies) == []
    settled = await _wait_until_settled(engine, within=60)
    assert settled, "refunds still open after the sweeps: " + str(await _open_refunds(engine))
    ledger = await compare_with_wechat(engine, wechat, api_version.name)
    assert ledger.problems == []
    # Two of the three distinct refunds fit on each order; a duplicate in flight must not have
    # turned the second one away.
    not_two = await scalar(
        engine, "SELECT count(*) FROM orders WHERE refunded_fee != 2 * (total_fee * 2 / 5)"
    )
    assert not_two == 0
    record_figures(
        "refund storm",
        {
            "api_version": api_version.name,
            "orders": ORDERS,
            "refund_requests": len(replies),
            "statuses": dict(Counter(r.status_code for _, _, r in replies)),
            "refunds": await _refund_statuses(engine),
            "wechat_refunded_fen": sum(o["refunded_fee"] for o in await wechat.orders()),
            **ledger.figures(),
        },
    )


def _budget(batch: int) -> int:
    # Mostly two failing calls per batch (the service's own retry absorbs them); every other
    # batch eight, so that some refunds fail twice and are left PENDING for the sweep.
    return 8 if batch % 2 else 2


async def _request(
    http: httpx.AsyncClient, base_url: str, order: PlacedOrder, k: int
) -> tuple[PlacedOrder, str, httpx.Response]:
    """Refund 40 % of the order: requests 0-2 with their own keys (only two can fit), request 3
    repeats request 0's key (the same refund, never a second one)."""
    key = f"{order.out_trade_no}-{k % 3}"
    response = await http.post(
        f"{base_url}/api/v1/admin/orders/{order.out_trade_no}/refunds",
        json={"refund_fee": order.total_fee * 2 // 5, "reason": "压测退款"},
        headers={**ADMIN, "Idempotency-Key": key},
    )
    return order, key, response


def _clear(response: httpx.Response) -> bool:
    if response.status_code not in CLEAR:
        return False
    if response.status_code in (201, 202):
        return bool(response.json().get("out_refund_no"))
    error = response.json().get("error") or {}
    return bool(error.get("code")) and bool(error.get("message"))


def _same_key_same_refund(replies: list[tuple[PlacedOrder, str, httpx.Response]]) -> list[str]:
    seen: dict[str, set[str]] = {}
    for _, key, response in replies:
        if response.status_code in (201, 202):
            seen.setdefault(key, set()).add(response.json()["out_refund_no"])
    return [key for key, numbers in seen.items() if len(numbers) > 1]


async def _wait_until_settled(engine: AsyncEngine, within: float) -> bool:
    """Age the open refunds so the sweeps take them, until none is open."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE refunds SET updated_at = now() - interval '10 minutes'"
                    " WHERE status IN ('PENDING', 'PROCESSING')"
                )
            )
        if not await _open_refunds(engine):
            return True
        await asyncio.sleep(0.5)
    return False


async def _open_refunds(engine: AsyncEngine) -> list[tuple[str, str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT out_refund_no, status, error FROM refunds"
                " WHERE status IN ('PENDING', 'PROCESSING') ORDER BY id"
            )
        )
        return [(r.out_refund_no, r.status, r.error) for r in rows]


async def _refund_statuses(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT status, count(*) FROM refunds GROUP BY status"))
        return {status: count for status, count in rows}
