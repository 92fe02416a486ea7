"""Upstream faults during order creation: about one unified-order call in five times out,
answers 5xx, answers malformed XML or SYSTEMERROR. Every client gets its order or a clear
error, retrying with the same Idempotency-Key never makes a second order, and our rows and
WeChat's agree one for one.

On both API versions: on v3 the same switches hit the JSAPI prepay call, where a malformed
answer is truncated JSON and SYSTEMERROR is ``500 SYSTEM_ERROR`` (PROTOCOL.md §8.1)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import scalar
from tests.plugins.simulator import SimulatorHandle
from tests.reliability.conftest import StartServices
from tests.reliability.ledger import compare_with_wechat
from tests.reliability.scenario import PayVersion, add_product, login_users, record_figures

pytestmark = pytest.mark.reliability

BATCHES = 20
BATCH_SIZE = 5
# One fault switch per batch, used up by that many calls: mostly one (the service's own retry
# absorbs it), every fifth batch six (five first attempts and one retry fail, so one client
# sees a clear 503 and retries with its Idempotency-Key). About 20 % of calls fail.
FAULTS: list[dict[str, Any]] = [
    {"name": "upstream_timeout", "seconds": 1.0},
    {"name": "upstream_5xx", "status": 502},
    {"name": "malformed_xml"},
    {"name": "systemerror"},
]
CLEAR_ERRORS = {502: "WECHAT_REJECTED", 503: "WECHAT_UNAVAILABLE"}


async def test_faulty_unified_order_gives_every_client_an_order_or_a_clear_error(
    start_services: StartServices,
    wechat: SimulatorHandle,
    api_version: PayVersion,
    http: httpx.AsyncClient,
    engine: AsyncEngine,
) -> None:
    services = start_services(count=2, WXPAY_HTTP_READ_TIMEOUT=0.5, WXPAY_WECHAT_MAX_ATTEMPTS=2)
    users = await login_users(http, services, wechat, BATCH_SIZE)
    product = await add_product(http, services[0], price_fen=990)

    outcomes: list[tuple[str, list[httpx.Response]]] = []
    for batch in range(BATCHES):
        fault = FAULTS[batch % len(FAULTS)]
        endpoint = api_version.endpoint("unifiedorder")
        await wechat.set_fault(endpoint=endpoint, count=_budget(batch), **fault)
        outcomes += await asyncio.gather(
            *(
                _client_creates_order(http, services[(batch + i) % 2].base_url, users[i], product)
                for i in range(BATCH_SIZE)
            )
        )
    left_over = await http.get(wechat.url("/_control/faults"))
    await wechat.clear_faults()

    unclear = [
        (r.status_code, r.text[:120])
        for _, replies in outcomes
        for r in replies
        if r.status_code != 201 and not _clear_error(r)
    ]
    assert unclear == []
    created = {
        r.json()["out_trade_no"]: r for _, rs in outcomes for r in rs if r.status_code == 201
    }
    wechat_orders = await wechat.orders()
    wechat_numbers = [o["out_trade_no"] for o in wechat_orders]
    assert len(wechat_numbers) == len(set(wechat_numbers))
    duplicates = await scalar(
        engine,
        "SELECT count(*) FROM (SELECT idempotency_key FROM orders GROUP BY idempotency_key"
        " HAVING count(*) > 1) d",
    )
    assert duplicates == 0
    prepay = {o["out_trade_no"]: o["prepay_id"] for o in wechat_orders}
    assert [
        no for no, r in created.items()
        if r.json()["pay_params"]["package"] != f"prepay_id={prepay.get(no)}"
    ] == []  # fmt: skip
    ledger = await compare_with_wechat(engine, wechat, api_version.name)
    assert ledger.problems == []
    first_tries = Counter(replies[0].status_code for _, replies in outcomes)
    final = Counter(replies[-1].status_code for _, replies in outcomes)
    record_figures(
        "upstream faults",
        {
            "api_version": api_version.name,
            "client_requests": BATCHES * BATCH_SIZE,
            "fault_switches": BATCHES,
            "faulty_calls": sum(_budget(b) for b in range(BATCHES)),
            "faults_left_unused": len(left_over.json()),
            "first_try_statuses": dict(first_tries),
            "after_one_client_retry": dict(final),
            "orders_at_wechat": len(wechat_orders),
            **ledger.figures(),
        },
    )


def _budget(batch: int) -> int:
    return 6 if batch % 5 == 4 else 1


async def _client_creates_order(
    http: httpx.AsyncClient, base_url: str, auth: dict[str, str], product: int
) -> tuple[str, list[httpx.Response]]:
    """A mini-program creating an order; on a clear upstream error it retries once with the
    same Idempotency-Key, as a client should."""
    key = uuid.uuid4().hex
    headers = {**auth, "Idempotency-Key": key}
    body = {"product_id": product, "quantity": 1}
    replies = [await http.post(base_url + "/api/v1/orders", json=body, headers=headers)]
    if replies[0].status_code in CLEAR_ERRORS:
        replies.append(await http.post(base_url + "/api/v1/orders", json=body, headers=headers))
    return key, replies


def _clear_error(response: httpx.Response) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return CLEAR_ERRORS.get(response.status_code) == error.get("code") and bool(error["message"])
