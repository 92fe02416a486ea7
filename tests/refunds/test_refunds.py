"""Refunds over HTTP against the simulator (PROTOCOL.md §6.3-6.5), on both databases."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.wechat.client import WeChatPayClient
from tests.conftest import ClientFactory, RuntimeFactory, Sweep
from tests.helpers import ADMIN, add_product, create_order, login, scalar, set_time
from tests.plugins.service import LiveFactory
from tests.plugins.simulator import TEST_TIME_FACTOR, SimulatorHandle, start_simulator
from tests.refunds.support import (
    age_refunds,
    at_wechat,
    order_row,
    paid_order,
    refund,
    refund_row,
    settled_at_wechat,
    until,
    wait_for_status,
)

# --- the whole flow ---------------------------------------------------------------------------


async def test_a_refund_is_accepted_then_settled_by_wechats_refund_notify(
    make_live_client: LiveFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    client = await make_live_client()
    order = await paid_order(client, fresh_simulator)
    no = order["out_trade_no"]

    accepted = await refund(client, no, 990)

    assert accepted.status_code == 201, accepted.text
    body = accepted.json()
    assert body["status"] in ("PROCESSING", "SUCCESS")  # the notify may already have come
    assert body["refund_id"]
    # The simulator settles after a few ms and posts the encrypted notify to our URL.
    await wait_for_status(engine, body["out_refund_no"], "SUCCESS")
    settled = await refund_row(engine, body["out_refund_no"])
    assert settled["success_time"] is not None
    mine = await client.get(f"/api/v1/orders/{no}", headers=order["auth"])
    assert mine.json()["status"] == "REFUND"
    assert mine.json()["refunded_fee"] == 990
    assert (await at_wechat(fresh_simulator, no))["refunded_fee"] == 990
    verdicts = await scalar(
        engine, "SELECT count(*) FROM payment_notifies WHERE verdict = 'REFUND_APPLIED'"
    )
    assert verdicts == 1


async def test_refunds_of_an_order_are_listed_oldest_first(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle
) -> None:
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    first = (await refund(client, no, 100)).json()
    second = (await refund(client, no, 200)).json()

    listed = await client.get(f"/api/v1/admin/orders/{no}/refunds", headers=ADMIN)

    assert listed.status_code == 200
    assert [r["out_refund_no"] for r in listed.json()] == [
        first["out_refund_no"],
        second["out_refund_no"],
    ]
    assert [r["refund_fee"] for r in listed.json()] == [100, 200]


# --- amounts ----------------------------------------------------------------------------------


async def test_partial_refunds_never_add_up_to_more_than_was_paid(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]

    first = await refund(client, no, 300)
    too_much = await refund(client, no, 700)
    rest = await refund(client, no, 690)

    assert first.status_code == 201
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "REFUND_EXCEEDS_PAID"
    assert "690 fen" in too_much.json()["error"]["message"]
    assert rest.status_code == 201
    assert (await order_row(engine, no))["refunded_fee"] == 990
    assert await scalar(engine, "SELECT count(*) FROM refunds") == 2
    assert (await at_wechat(fresh_simulator, no))["refunded_fee"] == 990


async def test_racing_refunds_cannot_overspend_the_order(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]

    replies = await asyncio.gather(*(refund(client, no, 300) for _ in range(5)))

    codes = sorted(r.status_code for r in replies)
    assert codes == [201, 201, 201, 409, 409]
    assert (await order_row(engine, no))["refunded_fee"] == 900
    assert await scalar(engine, "SELECT count(*) FROM refunds") == 3
    assert (await at_wechat(fresh_simulator, no))["refunded_fee"] == 900


async def test_only_a_paid_order_of_ours_can_be_refunded(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    auth = await login(client, fresh_simulator)
    unpaid = await create_order(client, auth, await add_product(client))

    not_paid = await refund(client, unpaid["out_trade_no"], 100)
    unknown = await refund(client, "20261127000000NOSUCHORDER1", 100)
    no_admin = await client.post(
        f"/api/v1/admin/orders/{unpaid['out_trade_no']}/refunds", json={"refund_fee": 100}
    )
    negative = await refund(client, unpaid["out_trade_no"], -5)

    assert not_paid.status_code == 409
    assert not_paid.json()["error"]["code"] == "ORDER_NOT_REFUNDABLE"
    assert unknown.status_code == 404
    assert no_admin.status_code == 403
    assert negative.status_code == 422
    assert await scalar(engine, "SELECT count(*) FROM refunds") == 0
    assert (await order_row(engine, unpaid["out_trade_no"]))["refunded_fee"] == 0


async def test_idempotency_key_returns_the_same_refund(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]

    first = await refund(client, no, 500, **{"Idempotency-Key": "rf-1"})
    again = await refund(client, no, 500, **{"Idempotency-Key": "rf-1"})
    other_amount = await refund(client, no, 400, **{"Idempotency-Key": "rf-1"})

    assert first.status_code == 201
    assert again.status_code == 201
    assert again.json()["out_refund_no"] == first.json()["out_refund_no"]
    assert other_amount.status_code == 409
    assert other_amount.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert await scalar(engine, "SELECT count(*) FROM refunds") == 1
    assert (await order_row(engine, no))["refunded_fee"] == 500
    assert (await at_wechat(fresh_simulator, no))["refunded_fee"] == 500


# --- WeChat failing ---------------------------------------------------------------------------


async def test_wechat_refusal_fails_the_refund_and_gives_its_amount_back(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    # WeChat no longer knows the order: its refusal (ORDERNOTEXIST) is final.
    await fresh_simulator.reset()

    refused = await refund(client, no, 990)

    assert refused.status_code == 502
    assert refused.json()["error"]["code"] == "WECHAT_REJECTED"
    assert "ORDERNOTEXIST" in refused.json()["error"]["message"]
    row = await refund_row(engine, await scalar(engine, "SELECT out_refund_no FROM refunds"))
    assert row["status"] == "FAILED"
    assert "ORDERNOTEXIST" in row["error"]
    order = await order_row(engine, no)
    assert (order["refunded_fee"], order["status"]) == (0, "SUCCESS")


async def test_unreachable_wechat_keeps_the_refund_pending_and_the_sweep_sends_it(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine, sweep: Sweep
) -> None:
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    await fresh_simulator.set_fault("upstream_5xx", endpoint="refund")

    pending = await refund(client, no, 990)

    assert pending.status_code == 202
    assert pending.json()["status"] == "PENDING"
    assert pending.json()["error"]
    assert (await order_row(engine, no))["refunded_fee"] == 990  # still reserved
    assert (await at_wechat(fresh_simulator, no))["refunded_fee"] == 0
    await fresh_simulator.clear_faults()
    assert (await sweep()).refunds == {}  # not due yet
    await age_refunds(engine, minutes=2)

    report = await sweep()

    out_refund_no = pending.json()["out_refund_no"]
    assert report.refunds == {out_refund_no: "PROCESSING"}
    assert (await at_wechat(fresh_simulator, no))["refunded_fee"] == 990
    assert (await order_row(engine, no))["status"] == "REFUND"


async def test_a_refund_wechat_took_but_never_answered_is_not_sent_twice(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine, sweep: Sweep
) -> None:
    client = await make_client(http_read_timeout=0.3, wechat_max_attempts=1)
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    # WeChat does the refund, but its answer comes after we stopped waiting.
    await fresh_simulator.set_fault("upstream_timeout", endpoint="refund", seconds=1, count=1)

    pending = await refund(client, no, 400)

    assert pending.status_code == 202
    # From now on a refund request would fail: the sweep can only succeed by asking.
    await fresh_simulator.set_fault("upstream_5xx", endpoint="refund")
    await age_refunds(engine, minutes=2)
    report = await sweep()

    out_refund_no = pending.json()["out_refund_no"]
    # Asked first: WeChat knows it, so it is recorded, not sent again.
    assert report.refunds[out_refund_no] in ("PROCESSING", "SUCCESS")
    assert (await refund_row(engine, out_refund_no))["refund_id"]
    assert (await at_wechat(fresh_simulator, no))["refunded_fee"] == 400


async def test_sweep_settles_a_refund_whose_notify_never_arrived(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    sweep: Sweep,
    settings: Settings,
    pay_client: WeChatPayClient,
) -> None:
    # The in-process service's refund notify URL points nowhere.
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    accepted = (await refund(client, no, 990)).json()
    assert accepted["status"] == "PROCESSING"
    await settled_at_wechat(pay_client, accepted["out_refund_no"])
    await age_refunds(engine, minutes=settings.reconcile_after_minutes + 1)

    report = await sweep()

    assert report.refunds == {accepted["out_refund_no"]: "SUCCESS"}
    assert (await refund_row(engine, accepted["out_refund_no"]))["success_time"] is not None


async def test_a_refusal_after_an_attempt_wechat_took_does_not_fail_the_refund(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    client = await make_client(http_read_timeout=0.3, wechat_max_attempts=2)
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    # Attempt 1: WeChat refunds, but answers after we stopped waiting. Attempt 2 (the client's
    # own retry, same out_refund_no): refused. The refund exists at WeChat all the same.
    await fresh_simulator.set_fault("upstream_timeout", endpoint="refund", seconds=1, count=1)
    request = asyncio.create_task(refund(client, no, 400))
    await until(lambda: _refunded_at_wechat(fresh_simulator, no, 400))
    await fresh_simulator.set_fault("business_error", endpoint="refund", err_code="PARAM_ERROR")

    answer = await request

    assert answer.status_code == 201, answer.text
    # Learnt by refund query: accepted, or already settled (the simulator takes a few ms).
    assert answer.json()["status"] in ("PROCESSING", "SUCCESS")
    assert answer.json()["refund_id"]
    assert (await order_row(engine, no))["refunded_fee"] == 400
    await fresh_simulator.clear_faults()
    # What is left to refund is what WeChat has not refunded: 590, not 990.
    assert (await refund(client, no, 591)).status_code == 409
    assert (await refund(client, no, 590)).status_code == 201
    assert (await at_wechat(fresh_simulator, no))["refunded_fee"] == 990


async def test_a_refusal_that_means_later_keeps_the_refund_pending(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine, sweep: Sweep
) -> None:
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    # The merchant's refundable balance is short (PROTOCOL.md §6.3: resubmit later, same number).
    await fresh_simulator.set_fault(
        "business_error", endpoint="refund", err_code="NOTENOUGH", count=1
    )

    pending = await refund(client, no, 990)

    assert pending.status_code == 202
    assert "NOTENOUGH" in pending.json()["error"]
    assert (await order_row(engine, no))["refunded_fee"] == 990
    await age_refunds(engine, minutes=2)
    report = await sweep()
    assert report.refunds == {pending.json()["out_refund_no"]: "PROCESSING"}
    assert (await at_wechat(fresh_simulator, no))["refunded_fee"] == 990


async def test_a_replay_answers_as_the_first_request_did(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    refused_no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    pending_no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    await fresh_simulator.set_fault("business_error", endpoint="refund", err_code="ORDERNOTEXIST")
    refused = [await refund(client, refused_no, 990, **{"Idempotency-Key": "a"}) for _ in "12"]
    await fresh_simulator.clear_faults()
    await fresh_simulator.set_fault("upstream_5xx")  # WeChat unreachable, queries included
    pending = [await refund(client, pending_no, 990, **{"Idempotency-Key": "b"}) for _ in "12"]

    assert [r.status_code for r in refused] == [502, 502]
    assert all("ORDERNOTEXIST" in r.json()["error"]["message"] for r in refused)
    assert [r.status_code for r in pending] == [202, 202]
    assert pending[0].json()["out_refund_no"] == pending[1].json()["out_refund_no"]
    assert await scalar(engine, "SELECT count(*) FROM refunds") == 2
    assert (await order_row(engine, refused_no))["refunded_fee"] == 0


async def _refunded_at_wechat(simulator: SimulatorHandle, no: str, fen: int) -> bool:
    return bool((await at_wechat(simulator, no))["refunded_fee"] == fen)


async def test_an_empty_idempotency_key_is_no_key(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]

    first = await refund(client, no, 100, **{"Idempotency-Key": ""})
    second = await refund(client, no, 100, **{"Idempotency-Key": ""})

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["out_refund_no"] != second.json()["out_refund_no"]
    assert (await order_row(engine, no))["refunded_fee"] == 200


async def test_the_sweep_skips_a_refund_another_worker_is_handling(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine, sweep: Sweep
) -> None:
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    await fresh_simulator.set_fault("upstream_5xx", endpoint="refund")
    pending = (await refund(client, no, 990)).json()
    await fresh_simulator.clear_faults()
    await age_refunds(engine, minutes=2)
    await lease_to_someone_else(engine, pending["out_refund_no"])

    skipped = await sweep()
    await lease_to_someone_else(engine, pending["out_refund_no"], minutes=-1)  # it ran out
    taken = await sweep()

    assert skipped.refunds == {}
    assert taken.refunds == {pending["out_refund_no"]: "PROCESSING"}
    assert (await at_wechat(fresh_simulator, no))["refunded_fee"] == 990


async def test_long_processing_refunds_do_not_starve_the_sweep(
    make_client: ClientFactory,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    # A WeChat whose refunds stay PROCESSING for hours (to a bank card, say).
    slow, server = start_simulator(settings, refund_settle_seconds=3600 / TEST_TIME_FACTOR)
    try:
        at_slow = {"pay_api_base": slow.base_url, "miniprogram_api_base": slow.base_url}
        client = await make_client(**at_slow)
        processing_no = (await paid_order(client, slow))["out_trade_no"]
        pending_no = (await paid_order(client, slow))["out_trade_no"]
        processing = (await refund(client, processing_no, 990)).json()
        await slow.set_fault("upstream_5xx", endpoint="refund")
        pending = (await refund(client, pending_no, 990)).json()
        await slow.clear_faults()
        await age_refunds(engine, minutes=settings.reconcile_after_minutes + 1)
        one_at_a_time = await make_runtime(**at_slow, sweep_batch_size=1)

        handled: dict[str, str] = {}
        for _ in range(2):
            handled |= (await one_at_a_time.sweeper.sweep_once()).refunds
    finally:
        server.stop()

    assert handled == {
        processing["out_refund_no"]: "PROCESSING",  # asked: still under way
        pending["out_refund_no"]: "PROCESSING",  # sent on the second pass, not starved
    }


async def lease_to_someone_else(engine: AsyncEngine, out_refund_no: str, minutes: int = 5) -> None:
    until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
    sql = "UPDATE refunds SET lease_until = :t, lease_token = 'other' WHERE out_refund_no = :n"
    await set_time(engine, sql, until, n=out_refund_no)
