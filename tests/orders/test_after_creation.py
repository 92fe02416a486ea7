"""Query, sync, close, expiry and compensation sweeps (issues 5 and 6)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sweep import SweepReport
from tests.helpers import add_product, create_order, login, prepay_id_of, scalar, set_time
from tests.plugins.simulator import SimulatorHandle


async def backdate(engine: AsyncEngine, out_trade_no: str, minutes: int, *, expire: bool) -> None:
    """Pretend the order was created ``minutes`` ago (and, with ``expire``, has expired)."""
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)
    columns = "created_at = :t" + (", time_expire = :t" if expire else "")
    sql = f"UPDATE orders SET {columns} WHERE out_trade_no = :n"
    await set_time(engine, sql, moment, n=out_trade_no)


async def status_of(engine: AsyncEngine, out_trade_no: str) -> str:
    status: str = await scalar(
        engine, "SELECT status FROM orders WHERE out_trade_no = :n", n=out_trade_no
    )
    return status


async def test_sync_learns_a_payment_whose_notify_never_arrived(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    # The in-process client's notify URL points nowhere: every delivery fails.
    auth = await login(client, fresh_simulator)
    order = await create_order(client, auth, await add_product(client))
    await fresh_simulator.pay(prepay_id_of(order))

    plain = await client.get(f"/api/v1/orders/{order['out_trade_no']}", headers=auth)
    synced = await client.get(f"/api/v1/orders/{order['out_trade_no']}?sync=true", headers=auth)

    assert plain.json()["status"] == "NOTPAY"
    assert synced.json()["status"] == "SUCCESS"
    assert synced.json()["transaction_id"]
    assert await scalar(engine, "SELECT count(*) FROM order_events WHERE kind='PAID'") == 1


async def test_sweep_recovers_missed_notifies(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    sweep: Callable[[], Awaitable[SweepReport]],
) -> None:
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client)
    paid = await create_order(client, auth, product_id)
    unpaid = await create_order(client, auth, product_id)
    await fresh_simulator.pay(prepay_id_of(paid))
    for order in (paid, unpaid):
        await backdate(engine, order["out_trade_no"], 10, expire=False)

    report = await sweep()

    assert report.claimed == 2
    assert report.paid == 1
    assert await status_of(engine, paid["out_trade_no"]) == "SUCCESS"
    assert await status_of(engine, unpaid["out_trade_no"]) == "NOTPAY"


async def test_sweep_leaves_recent_orders_alone(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    sweep: Callable[[], Awaitable[SweepReport]],
) -> None:
    auth = await login(client, fresh_simulator)
    await create_order(client, auth, await add_product(client))

    report = await sweep()

    assert report.claimed == 0


async def test_sweep_closes_expired_orders_after_asking_wechat(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    sweep: Callable[[], Awaitable[SweepReport]],
) -> None:
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client)
    expired = await create_order(client, auth, product_id)
    paid_late = await create_order(client, auth, product_id)
    await fresh_simulator.pay(prepay_id_of(paid_late))
    for order in (expired, paid_late):
        await backdate(engine, order["out_trade_no"], 60, expire=True)

    report = await sweep()

    assert (report.closed, report.paid) == (1, 1)
    assert await status_of(engine, expired["out_trade_no"]) == "CLOSED"
    assert await status_of(engine, paid_late["out_trade_no"]) == "SUCCESS"
    at_wechat = {o["out_trade_no"]: o["trade_state"] for o in await fresh_simulator.orders()}
    assert at_wechat[expired["out_trade_no"]] == "CLOSED"


async def test_concurrent_sweeps_share_the_work(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    sweep: Callable[[], Awaitable[SweepReport]],
) -> None:
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client)
    orders = [await create_order(client, auth, product_id) for _ in range(6)]
    for order in orders:
        await backdate(engine, order["out_trade_no"], 10, expire=False)

    reports = await asyncio.gather(*(sweep() for _ in range(3)))

    assert sum(r.claimed for r in reports) == 6
    claimed = [no for r in reports for no in r.outcomes]
    assert len(claimed) == len(set(claimed)) == 6


async def test_close_within_five_minutes_is_refused_clearly(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    # PROTOCOL.md §6.2: no close within 5 minutes of creating the order.
    auth = await login(client, fresh_simulator)
    order = await create_order(client, auth, await add_product(client))

    response = await client.post(f"/api/v1/orders/{order['out_trade_no']}/close", headers=auth)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "CLOSE_TOO_EARLY"
    assert "5 minutes" in response.json()["error"]["message"]
    assert await status_of(engine, order["out_trade_no"]) == "NOTPAY"


async def test_close_closes_at_wechat_and_here_and_is_idempotent(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    auth = await login(client, fresh_simulator)
    order = await create_order(client, auth, await add_product(client))
    no = order["out_trade_no"]
    await backdate(engine, no, 6, expire=False)

    first, second = await asyncio.gather(
        client.post(f"/api/v1/orders/{no}/close", headers=auth),
        client.post(f"/api/v1/orders/{no}/close", headers=auth),
    )

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["status"] == second.json()["status"] == "CLOSED"
    at_wechat = {o["out_trade_no"]: o["trade_state"] for o in await fresh_simulator.orders()}
    assert at_wechat[no] == "CLOSED"
    payable = await client.post(f"/api/v1/orders/{no}/pay-params", headers=auth)
    assert payable.status_code == 409


async def test_closing_an_order_the_user_already_paid_records_the_payment(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    # PROTOCOL.md §6.2: ORDERPAID means it cannot be closed: treat it as paid.
    auth = await login(client, fresh_simulator)
    order = await create_order(client, auth, await add_product(client))
    no = order["out_trade_no"]
    await fresh_simulator.pay(prepay_id_of(order))
    await backdate(engine, no, 6, expire=False)

    response = await client.post(f"/api/v1/orders/{no}/close", headers=auth)

    assert response.status_code == 200
    assert response.json()["status"] == "SUCCESS"


async def test_close_and_sync_racing_leave_one_consistent_outcome(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    auth = await login(client, fresh_simulator)
    order = await create_order(client, auth, await add_product(client))
    no = order["out_trade_no"]
    await fresh_simulator.pay(prepay_id_of(order))
    await backdate(engine, no, 6, expire=False)

    responses = await asyncio.gather(
        client.post(f"/api/v1/orders/{no}/close", headers=auth),
        client.get(f"/api/v1/orders/{no}?sync=true", headers=auth),
        client.post(f"/api/v1/orders/{no}/close", headers=auth),
        client.get(f"/api/v1/orders/{no}?sync=true", headers=auth),
    )

    closes, syncs = responses[0::2], responses[1::2]
    assert [r.status_code for r in syncs] == [200, 200]
    assert all(r.json()["status"] == "SUCCESS" for r in syncs)
    # A close that reads the order after a sync recorded the payment is refused as
    # not payable; one that got there first learns ORDERPAID from WeChat and records it.
    for close in closes:
        assert close.status_code in (200, 409), close.text
        if close.status_code == 409:
            assert close.json()["error"]["code"] == "ORDER_NOT_PAYABLE"
        else:
            assert close.json()["status"] == "SUCCESS"
    assert await status_of(engine, no) == "SUCCESS"
    assert await scalar(engine, "SELECT count(*) FROM order_events WHERE kind='PAID'") == 1


async def test_expired_order_cannot_get_pay_params(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    auth = await login(client, fresh_simulator)
    order = await create_order(client, auth, await add_product(client))
    await backdate(engine, order["out_trade_no"], 31, expire=True)

    response = await client.post(f"/api/v1/orders/{order['out_trade_no']}/pay-params", headers=auth)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "ORDER_NOT_PAYABLE"


async def test_sweep_prunes_expired_sessions_and_keeps_live_ones(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    sweep: Callable[[], Awaitable[SweepReport]],
) -> None:
    live = await login(client, fresh_simulator)
    await login(client, fresh_simulator)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    await set_time(
        engine,
        "UPDATE auth_sessions SET expires_at = :t WHERE id = (SELECT max(id) FROM auth_sessions)",
        past,
    )

    report = await sweep()

    assert report.sessions_pruned == 1
    assert await scalar(engine, "SELECT count(*) FROM auth_sessions") == 1
    assert (await client.get("/api/v1/auth/session", headers=live)).status_code == 200
