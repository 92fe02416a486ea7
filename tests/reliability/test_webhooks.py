"""Webhooks through a misbehaving receiver (issue 13): down for a while, 30 % of answers 5xx,
answers slower than the timeout, a service worker killed with ``kill -9`` mid-delivery; and
the notify storm with an endpoint configured. Through all of them every event reaches the
receiver at least once, none is lost, and every signature verifies."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.events.receiver import ReceiverServer
from tests.helpers import ADMIN
from tests.plugins.cluster import ServiceProcess
from tests.plugins.simulator import SimulatorHandle
from tests.reliability.conftest import StartServices
from tests.reliability.scenario import (
    PayVersion,
    orders_paid_at_wechat,
    post_notifies,
    record_figures,
)
from tests.reliability.test_notify_storm import CONCURRENCY, expected_replies, storm

pytestmark = pytest.mark.reliability

TIMEOUT = 1.0
# Backoff in fractions of a second (configurable for exactly this); the shape is the real one.
WEBHOOK_ENV = {
    "WXPAY_WEBHOOK_POLL_INTERVAL_SECONDS": 0.1,
    "WXPAY_WEBHOOK_RETRY_BASE_SECONDS": 0.2,
    "WXPAY_WEBHOOK_RETRY_MAX_SECONDS": 1.0,
    "WXPAY_WEBHOOK_TIMEOUT_SECONDS": TIMEOUT,
    "WXPAY_WEBHOOK_MAX_IN_FLIGHT": 4,
}
ORDERS = 60


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    server = ReceiverServer([])
    server.start()
    yield server
    server.stop()


async def subscribe(
    http: httpx.AsyncClient, service: ServiceProcess, receiver: ReceiverServer
) -> None:
    body = {"url": receiver.url, "events": ["*"]}
    created = await http.post(f"{service.base_url}/api/v1/admin/webhooks", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    receiver.secrets.append(created.json()["secret"])


async def redeliver_all(
    http: httpx.AsyncClient, service: ServiceProcess, engine: AsyncEngine
) -> None:
    for (public_id,) in await rows(engine, "SELECT public_id FROM outbox_events"):
        url = f"{service.base_url}/api/v1/admin/events/{public_id}/redeliver"
        answer = await http.post(url, headers=ADMIN)
        assert answer.status_code == 202, answer.text


async def rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql))).all())


async def all_delivered(engine: AsyncEngine, receiver: ReceiverServer, events: int) -> bool:
    stored = await rows(engine, "SELECT public_id FROM outbox_events")
    pending = await rows(engine, "SELECT id FROM webhook_deliveries WHERE delivered_at IS NULL")
    return (
        len(stored) >= events and not pending and {r[0] for r in stored} <= set(receiver.log.events)
    )


async def wait_for_events(engine: AsyncEngine, events: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while len(await rows(engine, "SELECT id FROM outbox_events")) < events:
        assert time.monotonic() < deadline, "payments still without their events"
        await asyncio.sleep(0.1)


async def wait_delivered(
    engine: AsyncEngine, receiver: ReceiverServer, events: int, within: float
) -> float:
    started = time.monotonic()
    while not await all_delivered(engine, receiver, events):
        assert time.monotonic() - started < within, "events still undelivered"
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def attempt_figures(engine: AsyncEngine) -> dict[str, int]:
    [(total, failed, no_answer, timeouts)] = await rows(
        engine,
        "SELECT count(*), count(*) FILTER (WHERE status IS NULL OR status >= 300),"
        " count(*) FILTER (WHERE status IS NULL),"
        " count(*) FILTER (WHERE error = 'TimeoutError') FROM webhook_attempts",
    )
    return {"attempts": total, "failed": failed, "no_answer": no_answer, "timeouts": timeouts}


def assert_none_lost_and_all_signed(receiver: ReceiverServer, stored: set[str]) -> None:
    assert stored - set(receiver.log.events) == set()  # none lost
    assert receiver.log.refused == 0
    assert receiver.all_signatures_verify()


async def _down_for_a_while(
    receiver: ReceiverServer, services: list[ServiceProcess], engine: AsyncEngine
) -> None:
    receiver.stop()
    await asyncio.sleep(4)
    receiver.start()


async def _errors(
    receiver: ReceiverServer, services: list[ServiceProcess], engine: AsyncEngine
) -> None:
    receiver.faults.error_ratio = 0.3


async def _slow(
    receiver: ReceiverServer, services: list[ServiceProcess], engine: AsyncEngine
) -> None:
    receiver.faults.delay_seconds = TIMEOUT * 1.5
    await asyncio.sleep(4)
    receiver.faults.delay_seconds = 0


async def _worker_killed(
    receiver: ReceiverServer, services: list[ServiceProcess], engine: AsyncEngine
) -> None:
    # Answers slow enough that sends stay open; a process is killed once it holds a lease taken
    # more than 0.2 s ago (its request is at the receiver, held 0.8 s). The cap counts both
    # processes, so one of them may take every send: whichever holds one is killed, read from
    # the lease tokens, which start with the holder's pid.
    receiver.faults.delay_seconds = 0.8
    holders = {f"{s.worker_pids()[0]:x}-%": s for s in services}
    holder = None
    for _ in range(1500):
        holder = await _holder_of_a_lease(engine, list(holders))
        if holder is not None:
            break
        await asyncio.sleep(0.01)
    assert holder is not None, "no process held a send open"
    holders[holder].kill_worker()  # its leases run out (timeout + 30 s); the other resends
    await asyncio.sleep(1)
    receiver.faults.delay_seconds = 0


async def _holder_of_a_lease(engine: AsyncEngine, patterns: list[str]) -> str | None:
    for pattern in patterns:
        if await _leases_in_flight(engine, pattern) > 0:
            return pattern
    return None


async def _leases_in_flight(engine: AsyncEngine, holder: str) -> int:
    """Deliveries ``holder`` (a token pattern) leased at least 0.2 s ago and still holds."""
    taken_before = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=TIMEOUT + 30 - 0.2)
    query = text(
        "SELECT count(*) FROM webhook_deliveries WHERE lease_token LIKE :holder"
        " AND delivered_at IS NULL AND lease_until < :before"
    )
    async with engine.connect() as conn:
        found = await conn.scalar(query, {"holder": holder, "before": taken_before})
    return int(found or 0)


FAULTS = {
    "receiver down": (_down_for_a_while, 1),
    "30% 5xx": (_errors, 1),
    "slower than the timeout": (_slow, 1),
    "worker killed": (_worker_killed, 1),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_every_event_reaches_a_misbehaving_receiver_signed(
    start_services: StartServices,
    wechat: SimulatorHandle,
    http: httpx.AsyncClient,
    engine: AsyncEngine,
    receiver: ReceiverServer,
    fault: str,
) -> None:
    strike, workers = FAULTS[fault]
    services = start_services(count=2, workers=workers, **WEBHOOK_ENV)
    await subscribe(http, services[0], receiver)
    if fault == "receiver down":
        receiver.stop()  # down before the first event
    paying = asyncio.create_task(
        orders_paid_at_wechat(http, services, wechat, users=4, orders=ORDERS, paid=ORDERS)
    )
    if fault == "receiver down":
        await asyncio.sleep(4)
        receiver.start()
    elif fault == "worker killed":
        # Killed once every payment has its event: what is tested is delivery, not notifies.
        await paying
        await wait_for_events(engine, ORDERS)
        # By now the first deliveries may all be made (they are fast): every event is sent
        # again (the admin API's redeliver) to a receiver that answers slowly, so both
        # processes have a backlog to be killed in.
        receiver.faults.delay_seconds = 0.8
        await redeliver_all(http, services[1], engine)
        await strike(receiver, services, engine)
    else:
        await strike(receiver, services, engine)
    await paying

    seconds = await wait_delivered(engine, receiver, ORDERS, within=120)

    stored = {r[0] for r in await rows(engine, "SELECT public_id FROM outbox_events")}
    assert len(stored) == ORDERS  # one order.paid per payment, however it was reported
    assert_none_lost_and_all_signed(receiver, stored)
    attempts = await attempt_figures(engine)
    if fault == "worker killed":
        # Sends that reached the receiver but whose attempt was never recorded: they died
        # with the process, mid-delivery, and were made again by the other one.
        assert len(receiver.seen.requests) > attempts["attempts"]
    else:
        assert attempts["failed"] > 0  # the fault really happened
    record_figures(
        f"webhooks: {fault}",
        {
            "events": len(stored),
            "requests_received": len(receiver.seen.requests),
            "duplicates_at_receiver": receiver.log.duplicates,
            "seconds_to_all_delivered": round(seconds, 1),
            **attempts,
        },
    )


async def test_notify_storm_with_a_webhook_endpoint_delivers_each_payment_once_or_more(
    start_services: StartServices,
    wechat: SimulatorHandle,
    api_version: PayVersion,
    http: httpx.AsyncClient,
    engine: AsyncEngine,
    receiver: ReceiverServer,
) -> None:
    services = start_services(count=2, **WEBHOOK_ENV)
    await subscribe(http, services[0], receiver)
    orders, paid = await orders_paid_at_wechat(
        http, services, wechat, users=10, orders=500, paid=400
    )
    notifies = storm(api_version, orders, paid, seed=7)
    expected = expected_replies(api_version)

    started = time.monotonic()
    deliveries = await post_notifies(notifies, [s.base_url for s in services], CONCURRENCY)
    elapsed = time.monotonic() - started
    seconds = await wait_delivered(engine, receiver, len(paid), within=180)

    unexpected = [
        (d.notify.kind, d.status, d.return_code)
        for d in deliveries
        if (d.status, d.return_code) != expected[d.notify.kind]
    ]
    assert unexpected == []
    stored = await rows(engine, "SELECT public_id, type FROM outbox_events")
    assert sorted(t for _, t in stored) == ["order.paid"] * len(paid)
    assert_none_lost_and_all_signed(receiver, {p for p, _ in stored})
    record_figures(
        "notify storm with a webhook endpoint",
        {
            "notifies_posted": len(notifies),
            "storm_seconds": round(elapsed, 1),
            "notifies_per_second": round(len(notifies) / elapsed),
            "events": len(stored),
            "requests_received": len(receiver.seen.requests),
            "duplicates_at_receiver": receiver.log.duplicates,
            "seconds_to_all_delivered_after_storm": round(seconds, 1),
            **(await attempt_figures(engine)),
        },
    )
