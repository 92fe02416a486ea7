"""Every fault switch, globally, per order and per endpoint, and the latency setting."""

from __future__ import annotations

import time

from app.wechat.signing import SignType, verify
from tests.simulator.helpers import Merchant, NotifyReceiver


async def test_duplicate_notifies_arrive_again_after_the_acknowledgement(
    merchant: Merchant, receiver: NotifyReceiver
) -> None:
    await merchant.set_fault("duplicate_notify", copies=2)

    order = await merchant.paid_order()
    attempts = await merchant.settled_notifies(3)

    assert [a["copy"] for a in attempts] == [0, 1, 2]
    assert all(a["verdict"] == "acknowledged" for a in attempts)
    assert {n["transaction_id"] for n in receiver.received} == {order["transaction_id"]}
    assert receiver.max_in_flight == 1


async def test_concurrent_duplicates_overlap_in_flight(
    merchant: Merchant, receiver: NotifyReceiver
) -> None:
    await merchant.set_fault("duplicate_notify", copies=3, concurrent=True)

    await merchant.paid_order()
    attempts = await merchant.settled_notifies(4)

    assert len(attempts) == len(receiver.raw) == 4
    assert len(set(receiver.raw)) == 1  # the very same bytes, four times
    assert receiver.max_in_flight == 4


async def test_a_delayed_notify_arrives_late(merchant: Merchant) -> None:
    await merchant.set_fault("delay_notify", delay_ms=150)

    started = time.perf_counter()
    await merchant.paid_order()
    await merchant.settled_notifies(1)

    assert time.perf_counter() - started >= 0.15
    assert (await merchant.notifies())[0]["faults"] == ["delay_notify"]


async def test_a_tampered_amount_is_correctly_signed_but_wrong(
    merchant: Merchant, receiver: NotifyReceiver
) -> None:
    await merchant.set_fault("tamper_amount", delta=-99)

    await merchant.paid_order(total_fee=100)
    await merchant.settled_notifies(1)
    [notify] = receiver.received

    assert (notify["total_fee"], notify["cash_fee"]) == ("1", "1")
    assert verify(notify, merchant.config.api_key, SignType.MD5)


async def test_a_bad_signature_does_not_verify(
    merchant: Merchant, receiver: NotifyReceiver
) -> None:
    await merchant.set_fault("bad_signature")

    await merchant.paid_order()
    await merchant.settled_notifies(1)
    [notify] = receiver.received

    assert len(notify["sign"]) == 32
    assert not verify(notify, merchant.config.api_key, SignType.MD5)


async def test_a_result_fail_notify_is_signed_and_says_fail(
    merchant: Merchant, receiver: NotifyReceiver
) -> None:
    await merchant.set_fault("result_fail")

    await merchant.paid_order()
    await merchant.settled_notifies(1)
    [notify] = receiver.received

    assert (notify["return_code"], notify["result_code"]) == ("SUCCESS", "FAIL")
    assert notify["err_code"] == "NOTENOUGH"
    assert verify(notify, merchant.config.api_key, SignType.MD5)


async def test_an_order_scoped_fault_leaves_other_orders_alone(
    merchant: Merchant, receiver: NotifyReceiver
) -> None:
    target = merchant.order_fields(await merchant.login())
    await merchant.set_fault("bad_signature", out_trade_no=target["out_trade_no"])

    await merchant.paid_order()
    reply = await merchant.call("/pay/unifiedorder", target)
    await merchant.pay(reply["prepay_id"])
    await merchant.settled_notifies(2)
    by_order = {n["out_trade_no"]: n for n in receiver.received}

    assert not verify(by_order.pop(target["out_trade_no"]), merchant.config.api_key)
    assert all(verify(n, merchant.config.api_key) for n in by_order.values())


async def test_a_counted_fault_is_used_up(merchant: Merchant, receiver: NotifyReceiver) -> None:
    await merchant.set_fault("bad_signature", count=1)

    await merchant.paid_order()
    await merchant.paid_order()
    await merchant.settled_notifies(2)

    valid = [verify(n, merchant.config.api_key) for n in receiver.received]
    assert sorted(valid) == [False, True]
    assert (await merchant.http.get("/_control/faults")).json() == []


async def test_upstream_5xx_answers_with_the_status_and_processes_nothing(
    merchant: Merchant,
) -> None:
    await merchant.set_fault("upstream_5xx", endpoint="unifiedorder", status=503, count=1)
    fields = merchant.order_fields(await merchant.login())

    failed = await merchant.http.post("/pay/unifiedorder", content=merchant.signed_body(fields))
    retried = await merchant.call("/pay/unifiedorder", fields)

    assert failed.status_code == 503
    assert retried["result_code"] == "SUCCESS"


async def test_malformed_xml_is_answered_to_a_matching_endpoint_only(merchant: Merchant) -> None:
    await merchant.set_fault("malformed_xml", endpoint="orderquery")
    order = await merchant.place_order()

    garbled = await merchant.http.post(
        "/pay/orderquery",
        content=merchant.signed_body({"out_trade_no": order["out_trade_no"]}),
    )

    assert garbled.status_code == 200
    assert not garbled.text.endswith("</xml>")


async def test_systemerror_is_signed_and_creates_no_order(merchant: Merchant) -> None:
    await merchant.set_fault("systemerror", endpoint="unifiedorder", count=1)
    fields = merchant.order_fields(await merchant.login())

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert (reply["result_code"], reply["err_code"]) == ("FAIL", "SYSTEMERROR")
    assert merchant.is_signed(reply)
    assert merchant.simulator.state.orders == {}


async def test_upstream_timeout_does_the_work_and_answers_late(merchant: Merchant) -> None:
    await merchant.set_fault("upstream_timeout", endpoint="unifiedorder", seconds=0.2, count=1)
    fields = merchant.order_fields(await merchant.login())

    started = time.perf_counter()
    late = await merchant.call("/pay/unifiedorder", fields)
    elapsed = time.perf_counter() - started
    again = await merchant.call("/pay/unifiedorder", fields)

    assert elapsed >= 0.2
    assert again["prepay_id"] == late["prepay_id"]


async def test_code2session_can_fail_with_a_system_error(merchant: Merchant) -> None:
    await merchant.set_fault("systemerror", endpoint="jscode2session")

    response = await merchant.http.get("/sns/jscode2session", params={"js_code": "x"})

    assert response.json()["errcode"] == -1


async def test_faults_can_be_listed_and_removed_one_by_one(merchant: Merchant) -> None:
    first = await merchant.set_fault("bad_signature")
    second = await merchant.set_fault("duplicate_notify", copies=2)

    await merchant.http.delete(f"/_control/faults/{first['id']}")
    listed = (await merchant.http.get("/_control/faults")).json()

    assert [f["id"] for f in listed] == [second["id"]]
    assert listed[0]["copies"] == 2


async def test_an_unknown_fault_name_is_refused(merchant: Merchant) -> None:
    response = await merchant.http.post("/_control/faults", json={"name": "meteor_strike"})

    assert response.status_code == 422


async def test_latency_delays_every_wechat_answer(merchant: Merchant) -> None:
    response = await merchant.http.post("/_control/latency", json={"latency_ms": 100})
    order = await merchant.place_order()

    started = time.perf_counter()
    await merchant.query(order["out_trade_no"])
    elapsed = time.perf_counter() - started

    assert response.json() == {"latency_ms": 100}
    assert 0.1 <= elapsed < 0.5
