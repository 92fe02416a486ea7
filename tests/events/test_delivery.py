"""Issue 13: the delivery worker. Signed POSTs to a real receiver over HTTP, retried with
backoff until a 2xx, every attempt recorded; endpoints that keep failing are disabled and
keep what they are owed. Backoff is configured in milliseconds here, not slept in minutes."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.events.worker import DeliveryWorker
from app.simulator.messages import payment_notify_body
from examples.webhook_receiver import verify_signature
from tests.conftest import ClientFactory, RuntimeFactory
from tests.events.receiver import ReceiverServer
from tests.events.support import outbox
from tests.events.test_outbox import NOTIFY, new_order
from tests.helpers import ADMIN, scalar, set_time
from tests.plugins.simulator import SimulatorHandle
from tests.test_metrics import scrape, value

HOOKS = "/api/v1/admin/webhooks"
FAST = {
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_max_seconds": 0.2,
    "webhook_timeout_seconds": 2.0,
}


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    server = ReceiverServer([])
    server.start()
    yield server
    server.stop()


async def subscribe(
    client: httpx.AsyncClient, receiver: ReceiverServer, events: list[str] | None = None
) -> dict[str, Any]:
    body = {"url": receiver.url, "events": events or ["*"]}
    created = await client.post(HOOKS, json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    receiver.secrets.append(created.json()["secret"])
    endpoint: dict[str, Any] = created.json()
    return endpoint


async def pay(client: httpx.AsyncClient, simulator: SimulatorHandle, settings: Settings) -> str:
    """A new order paid by a notify: one ``order.paid`` event."""
    order = await new_order(client, simulator)
    no = order["out_trade_no"]
    body = payment_notify_body(settings, out_trade_no=no, transaction_id="42" + no, total_fee=990)
    assert b"SUCCESS" in (await client.post(NOTIFY, content=body)).content
    return str(no)


async def deliver_until(
    worker: DeliveryWorker, done: Callable[[], Awaitable[bool]], within: float = 15.0
) -> None:
    deadline = time.monotonic() + within
    while not await done():
        if time.monotonic() > deadline:
            raise AssertionError("not delivered in time")
        await worker.deliver_once()
        await asyncio.sleep(0.02)


async def undelivered(engine: AsyncEngine) -> int:
    found: int = await scalar(
        engine, "SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL"
    )
    return found


async def test_an_event_is_posted_signed_and_recorded_as_delivered(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
    receiver: ReceiverServer,
) -> None:
    endpoint = await subscribe(client, receiver, ["order.paid"])
    await pay(client, fresh_simulator, settings)
    worker = (await make_runtime(**FAST)).deliveries

    assert await worker.deliver_once() == 1

    [(headers, body)] = receiver.seen.requests
    event = json.loads(body)
    assert headers["wxpay-event-id"] == event["id"]
    assert verify_signature(headers["wxpay-signature"], body, endpoint["secret"])
    assert not verify_signature(headers["wxpay-signature"], body + b" ", endpoint["secret"])
    assert event["type"] == "order.paid" and event["data"]["status"] == "SUCCESS"
    assert list(receiver.log.events) == [event["id"]]
    # The feed shows the same bytes the webhook carried.
    feed = await client.get("/api/v1/admin/events", headers=ADMIN)
    assert json.dumps(feed.json()["items"][0], sort_keys=True) == json.dumps(event, sort_keys=True)
    [delivery] = (await client.get(f"{HOOKS}/{endpoint['id']}/deliveries", headers=ADMIN)).json()
    assert delivery["delivered_at"] is not None and delivery["event_id"] == event["id"]
    [attempt] = delivery["attempt_log"]
    assert (attempt["status"], attempt["body_excerpt"]) == (200, "new")
    assert attempt["latency_ms"] >= 0
    assert await worker.deliver_once() == 0  # nothing is sent twice


async def test_an_endpoint_receives_only_the_types_it_subscribed_to(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
    receiver: ReceiverServer,
) -> None:
    await subscribe(client, receiver, ["refund.succeeded"])
    await pay(client, fresh_simulator, settings)
    worker = (await make_runtime(**FAST)).deliveries

    assert await worker.deliver_once() == 0
    assert receiver.seen.requests == []
    assert len(await outbox(engine)) == 1  # the event exists, in the feed


async def test_failed_attempts_are_retried_with_backoff_each_signed_afresh_and_recorded(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
    receiver: ReceiverServer,
) -> None:
    endpoint = await subscribe(client, receiver)
    await pay(client, fresh_simulator, settings)
    receiver.faults.fail_next = 2
    runtime = await make_runtime(**FAST)
    # A clock a second apart per reading, so a fresh signature per attempt shows in ``t``.
    ticks = itertools.count(int(time.time()))
    async with httpx.AsyncClient(trust_env=False) as http:
        worker = DeliveryWorker(
            runtime.db, runtime.settings, runtime.webhooks, http, clock=lambda: next(ticks)
        )
        await _retry_until_delivered(worker, engine)

    [delivery] = (await client.get(f"{HOOKS}/{endpoint['id']}/deliveries", headers=ADMIN)).json()
    assert [a["status"] for a in delivery["attempt_log"]] == [503, 503, 200]
    assert delivery["attempt_log"][0]["body_excerpt"] == "unavailable"
    stamps = [h["wxpay-signature"].split(",")[0] for h, _ in receiver.seen.requests]
    assert len(set(stamps)) == 3  # each attempt signed afresh, with its own t
    assert receiver.all_signatures_verify()
    shown = (await client.get(f"{HOOKS}/{endpoint['id']}", headers=ADMIN)).json()
    assert shown["failing_since"] is None  # cleared by the 2xx


async def _retry_until_delivered(worker: DeliveryWorker, engine: AsyncEngine) -> None:
    assert await worker.deliver_once() == 1
    assert await worker.deliver_once() == 0  # backing off: not due yet
    await deliver_until(worker, lambda: _delivered_all(engine))


async def _delivered_all(engine: AsyncEngine) -> bool:
    return await undelivered(engine) == 0


async def test_an_answer_slower_than_the_timeout_is_a_failed_attempt(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
    receiver: ReceiverServer,
) -> None:
    endpoint = await subscribe(client, receiver)
    await pay(client, fresh_simulator, settings)
    receiver.faults.delay_seconds = 1.0
    worker = (await make_runtime(**{**FAST, "webhook_timeout_seconds": 0.2})).deliveries

    await worker.deliver_once()
    receiver.faults.delay_seconds = 0
    await deliver_until(worker, lambda: _delivered_all(engine))

    [delivery] = (await client.get(f"{HOOKS}/{endpoint['id']}/deliveries", headers=ADMIN)).json()
    first, *_, last = delivery["attempt_log"]
    assert (first["status"], first["error"]) == (None, "TimeoutError")
    assert first["latency_ms"] < 900
    assert last["status"] == 200


async def test_an_endpoint_failing_too_long_is_disabled_keeps_its_events_and_gets_them_back(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
    receiver: ReceiverServer,
) -> None:
    endpoint = await subscribe(client, receiver)
    url = f"{HOOKS}/{endpoint['id']}"
    await pay(client, fresh_simulator, settings)
    receiver.faults.error_ratio = 1.0
    worker = (await make_runtime(**FAST, webhook_disable_after_seconds=0.3)).deliveries

    async def disabled() -> bool:
        return not (await client.get(url, headers=ADMIN)).json()["enabled"]

    await deliver_until(worker, disabled)
    shown = (await client.get(url, headers=ADMIN)).json()
    assert shown["disabled_reason"] and shown["failing_since"]
    await pay(client, fresh_simulator, settings)  # owed while disabled, too
    tried = len(receiver.seen.requests)
    assert await worker.deliver_once() == 0  # a disabled endpoint is not sent to
    assert len(receiver.seen.requests) == tried
    receiver.faults.error_ratio = 0.0

    enabled = await client.patch(url, json={"enabled": True}, headers=ADMIN)

    assert enabled.json()["disabled_reason"] is None
    await deliver_until(worker, lambda: _delivered_all(engine))
    assert len(receiver.log.events) == 2


async def test_during_a_rotation_both_secrets_sign_each_request(
    make_client: ClientFactory,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    receiver: ReceiverServer,
) -> None:
    client = await make_client()
    endpoint = await subscribe(client, receiver)
    rotated = await client.post(f"{HOOKS}/{endpoint['id']}/rotate-secret", headers=ADMIN)
    new_secret = rotated.json()["secret"]
    await pay(client, fresh_simulator, settings)
    worker = (await make_runtime(**FAST)).deliveries

    await worker.deliver_once()

    [(headers, body)] = receiver.seen.requests
    assert headers["wxpay-signature"].count("v1=") == 2
    assert verify_signature(headers["wxpay-signature"], body, endpoint["secret"])
    assert verify_signature(headers["wxpay-signature"], body, new_secret)


async def test_after_the_grace_period_only_the_new_secret_signs(
    make_client: ClientFactory,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    receiver: ReceiverServer,
) -> None:
    client = await make_client(webhook_secret_grace_seconds=0)
    endpoint = await subscribe(client, receiver)
    new_secret = (
        await client.post(f"{HOOKS}/{endpoint['id']}/rotate-secret", headers=ADMIN)
    ).json()["secret"]
    await pay(client, fresh_simulator, settings)

    await (await make_runtime(**FAST)).deliveries.deliver_once()

    [(headers, body)] = receiver.seen.requests
    assert headers["wxpay-signature"].count("v1=") == 1
    assert verify_signature(headers["wxpay-signature"], body, new_secret)
    assert not verify_signature(headers["wxpay-signature"], body, endpoint["secret"])


async def test_redelivery_sends_the_same_event_again(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    receiver: ReceiverServer,
) -> None:
    await subscribe(client, receiver)
    await pay(client, fresh_simulator, settings)
    worker = (await make_runtime(**FAST)).deliveries
    await worker.deliver_once()
    event_id = json.loads(receiver.seen.requests[0][1])["id"]

    again = await client.post(f"/api/v1/admin/events/{event_id}/redeliver", headers=ADMIN)
    unknown = await client.post("/api/v1/admin/events/evt_nope/redeliver", headers=ADMIN)

    assert (again.status_code, again.json()) == (202, {"deliveries": 1})
    assert unknown.json()["error"]["code"] == "EVENT_NOT_FOUND"
    assert await worker.deliver_once() == 1
    assert [json.loads(b)["id"] for _, b in receiver.seen.requests] == [event_id, event_id]
    assert receiver.log.duplicates == 1  # the receiver deduped it by id


# One worker, then two processes' workers on one database passing at the same moment: the
# endpoint sees the cap once, not once per replica.
@pytest.mark.parametrize("replicas", [1, 2], ids=["one process", "two replicas"])
async def test_at_most_max_in_flight_requests_are_open_to_one_endpoint(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
    receiver: ReceiverServer,
    replicas: int,
) -> None:
    await subscribe(client, receiver)
    for _ in range(6):
        await pay(client, fresh_simulator, settings)
    receiver.faults.delay_seconds = 0.3
    workers = [
        (await make_runtime(**FAST, webhook_max_in_flight=2)).deliveries for _ in range(replicas)
    ]

    first_passes = await asyncio.gather(*(worker.deliver_once() for worker in workers))
    await deliver_until(workers[-1], lambda: _delivered_all(engine))

    assert sorted(first_passes) == [0] * (replicas - 1) + [2]
    assert receiver.seen.peak_open == 2
    assert len(receiver.log.events) == 6


async def test_a_pass_over_an_idle_endpoint_takes_no_lock(
    client: httpx.AsyncClient,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
    receiver: ReceiverServer,
) -> None:
    # Claims take the endpoint's turn (its row locked) only when something is due: an idle
    # endpoint costs each pass of every replica one read, and a replica holding the turn
    # does not hold up the others' idle passes.
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's (the PostgreSQL pass runs this)")
    endpoint = await subscribe(client, receiver)
    worker = (await make_runtime(**FAST)).deliveries
    async with engine.connect() as holder, holder.begin():
        lock = "SELECT id FROM webhook_endpoints WHERE id = :ep FOR UPDATE"
        await holder.execute(text(lock), {"ep": endpoint["id"]})

        assert await asyncio.wait_for(worker.deliver_once(), timeout=5) == 0


async def test_the_service_delivers_in_the_background_and_stops_cleanly(
    make_client: ClientFactory,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    engine: AsyncEngine,
    receiver: ReceiverServer,
) -> None:
    client = await make_client(webhook_poll_interval_seconds=0.05, **FAST)
    await subscribe(client, receiver)

    await pay(client, fresh_simulator, settings)

    for _ in range(250):
        if receiver.log.events:
            break
        await asyncio.sleep(0.02)
    assert len(receiver.log.events) == 1


async def test_the_cli_sends_what_is_due_once(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    database_url: str,
    receiver: ReceiverServer,
) -> None:
    from tests.test_cli import cli

    endpoint = await subscribe(client, receiver)
    await pay(client, fresh_simulator, settings)

    done = cli(database_url, "deliver-webhooks")

    assert (done.returncode, done.stdout.strip()) == (0, "1 webhook attempts made"), done.stderr
    [(headers, body)] = receiver.seen.requests
    assert verify_signature(headers["wxpay-signature"], body, endpoint["secret"])
    assert endpoint["secret"] not in done.stdout + done.stderr


async def test_metrics_show_each_endpoints_backlog_and_its_age(
    make_client: ClientFactory,
    fresh_simulator: SimulatorHandle,
    settings: Settings,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
    receiver: ReceiverServer,
) -> None:
    """Issue 15: the webhook lag in ``/metrics``, read from the database at each scrape."""
    client = await make_client(metrics=True)
    endpoint = await subscribe(client, receiver, ["order.paid"])
    label = {"endpoint": str(endpoint["id"])}
    assert value(await scrape(client), "wxpay_webhook_oldest_pending_seconds", **label) == 0
    await pay(client, fresh_simulator, settings)
    await pay(client, fresh_simulator, settings)
    ten_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    await set_time(engine, "UPDATE webhook_deliveries SET created_at = :t", ten_minutes_ago)

    owed = await scrape(client)

    assert value(owed, "wxpay_webhook_pending_deliveries", **label) == 2
    assert 600 <= value(owed, "wxpay_webhook_oldest_pending_seconds", **label) < 660
    assert value(owed, "wxpay_webhook_endpoint_enabled", **label) == 1
    await deliver_until((await make_runtime(**FAST)).deliveries, lambda: _none_undelivered(engine))
    paid_up = await scrape(client)
    assert value(paid_up, "wxpay_webhook_pending_deliveries", **label) == 0
    assert value(paid_up, "wxpay_webhook_oldest_pending_seconds", **label) == 0


async def _none_undelivered(engine: AsyncEngine) -> bool:
    return await undelivered(engine) == 0
