"""PostgreSQL restarted mid-storm (``pg_ctlcluster ... stop``, a pause, ``start``): during the
outage notifies are answered FAIL with 503 and /readyz reports 503; after it, WeChat's
retries succeed; every acknowledged payment is in the database and nothing is lost.

This disturbs every PostgreSQL user on the machine for a few seconds; it runs once per API
version (v2 notifies are answered in XML, v3's in JSON: PROTOCOL.md §5, §8.5).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.plugins.cluster import ServiceProcess
from tests.plugins.simulator import SimulatorHandle
from tests.reliability.conftest import StartServices
from tests.reliability.ledger import compare_with_wechat
from tests.reliability.scenario import (
    Delivery,
    Notify,
    PayVersion,
    orders_paid_at_wechat,
    post_notifies,
    record_figures,
    retry_until_acknowledged,
    shuffled,
)

pytestmark = pytest.mark.reliability

ORDERS = 150
PAID = 120
COPIES = 12
OUTAGE_SECONDS = 3.0


def pg_ctl(action: str) -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=60,
    )


def wait_for_postgres(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("PostgreSQL did not come back")
        time.sleep(0.2)


@pytest.fixture
def restartable_postgres(pg_database_url: str) -> Iterator[None]:
    if not Path("/etc/postgresql").is_dir():
        pytest.skip("needs a local PostgreSQL cluster managed by pg_ctlcluster")
    yield None
    # Whatever happened, leave PostgreSQL running for everyone else.
    if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode != 0:
        pg_ctl("start")
    wait_for_postgres()


async def test_database_outage_is_answered_fail_and_the_retries_lose_nothing(
    restartable_postgres: None,
    start_services: StartServices,
    wechat: SimulatorHandle,
    api_version: PayVersion,
    http: httpx.AsyncClient,
    engine: AsyncEngine,
) -> None:
    services = start_services(count=2)
    orders, paid = await orders_paid_at_wechat(
        http, services, wechat, users=5, orders=ORDERS, paid=PAID
    )
    notifies: list[Notify] = shuffled(
        [
            api_version.paid_notify(o, paid[o.out_trade_no])
            for o in orders[:PAID]
            for _ in range(COPIES)
        ],
        seed=5,
    )
    await engine.dispose()  # our own pool must not hold connections across the restart

    storm = asyncio.create_task(post_notifies(notifies, [s.base_url for s in services], 50))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(pg_ctl, "stop")
    readiness, during_outage = await _observe_outage(services, notifies[:20])
    await asyncio.to_thread(pg_ctl, "start")
    await asyncio.to_thread(wait_for_postgres)
    deliveries = await storm
    acknowledged = {d.notify.out_trade_no for d in deliveries if d.acknowledged}
    still_refused = await retry_until_acknowledged(notifies, [s.base_url for s in services])
    ready_after = [(await http.get(s.base_url + "/readyz")).status_code for s in services]

    # Every reply is an acknowledgement or a FAIL that makes WeChat retry; no answer at all
    # (a refused or reset connection) is also a retry. A 500 JSON body is neither.
    assert {(d.status, d.return_code) for d in deliveries if d.status is not None} <= {
        api_version.acknowledged_reply,
        (503, "FAIL"),
    }
    assert set(readiness) == {503}
    assert {(d.status, d.return_code) for d in during_outage} == {(503, "FAIL")}
    assert still_refused == []
    assert ready_after == [200, 200]
    assert acknowledged - await _paid_orders(engine) == set()
    ledger = await compare_with_wechat(engine, wechat, api_version.name)
    assert ledger.problems == []
    assert (ledger.our_paid, ledger.paid_events) == (PAID, PAID)
    record_figures(
        "database restart",
        {
            "api_version": api_version.name,
            "orders": ORDERS,
            "paid_at_wechat": PAID,
            "notifies_posted": len(notifies),
            "outage_seconds": OUTAGE_SECONDS,
            "storm_replies": _tally(deliveries),
            "readyz_during_outage": sorted(set(readiness)),
            "notifies_during_outage": _tally(during_outage),
            **ledger.figures(),
        },
    )


async def _observe_outage(
    services: list[ServiceProcess], probes: list[Notify]
) -> tuple[list[int], list[Delivery]]:
    readiness: list[int] = []
    deadline = time.monotonic() + OUTAGE_SECONDS
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        while time.monotonic() < deadline:
            for service in services:
                readiness.append((await http.get(service.base_url + "/readyz")).status_code)
            await asyncio.sleep(0.2)
    during = await post_notifies(probes, [s.base_url for s in services], concurrency=5)
    return readiness, during


def _tally(deliveries: Sequence[Delivery]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in deliveries:
        key = f"{d.status} {d.return_code}"
        counts[key] = counts.get(key, 0) + 1
    return counts


async def _paid_orders(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT out_trade_no FROM orders WHERE status = 'SUCCESS'"))
        return set(rows.scalars())
