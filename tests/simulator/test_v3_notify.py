"""v3 notifies (PROTOCOL.md §8.5, §8.7): signed, the resource AES-256-GCM under the APIv3 key,
acknowledged by HTTP 200 or 204, retried on v2's schedule otherwise; refunds settle and notify."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from app.simulator import Simulator
from app.simulator.v3envelope import SignatureFlaw
from app.simulator.v3keys import DevMaterial
from app.simulator.v3messages import signed_notify
from app.wechat.errors import InvalidNotification, WeChatRejected
from app.wechat.v3client import WeChatPayV3Client
from tests.hermetic import hermetic_settings
from tests.simulator.v3helpers import (
    V3Receiver,
    V3Simulator,
    in_process_v3,
    settled_attempts,
    v3_client,
)


async def test_a_paid_order_notifies_transaction_success_that_verifies_and_decrypts(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    client = v3_simulator.client(http)
    prepay_id = await v3_simulator.place_order(client, "V3NOTIFY001", total=250)
    paid = await v3_simulator.handle.pay(prepay_id)
    [attempt, *_] = await v3_simulator.handle.wait_for_notifies(1)

    envelope = json.loads(attempt["body"])
    transaction = await client.parse_payment_notify(attempt["headers"], attempt["body"].encode())

    assert attempt["api_version"] == "v3"
    assert envelope["event_type"] == "TRANSACTION.SUCCESS"
    assert envelope["resource_type"] == "encrypt-resource"
    assert envelope["summary"] and envelope["create_time"].endswith("+08:00")
    assert envelope["resource"]["algorithm"] == "AEAD_AES_256_GCM"
    assert envelope["resource"]["original_type"] == "transaction"
    assert envelope["resource"]["associated_data"] == "transaction"
    assert transaction.out_trade_no == "V3NOTIFY001"
    assert transaction.transaction_id == paid["transaction_id"]
    assert transaction.amount is not None and transaction.amount.total == 250
    assert transaction.trade_state == "SUCCESS"


@pytest.mark.parametrize(
    ("replies", "verdicts"),
    [
        ([204], ["acknowledged"]),
        ([(200, b'{"code":"SUCCESS","message":"OK"}')], ["acknowledged"]),
        # §8.5: WeChat reads the status first; a 200 saying FAIL is not retried.
        ([(200, b'{"code":"FAIL","message":"busy"}')], ["acknowledged"]),
        ([500, 404, 204], ["rejected", "rejected", "acknowledged"]),
    ],
)
async def test_a_notify_counts_as_delivered_only_on_200_or_204(
    v3_material: DevMaterial, replies: list[int | tuple[int, bytes]], verdicts: list[str]
) -> None:
    receiver = V3Receiver(replies=list(replies))
    async with in_process_v3(v3_material, receiver) as (simulator, http):
        client = _client(simulator, http, v3_material)
        openid = simulator.miniprogram.mint_code().openid
        prepay_id = await client.jsapi_prepay(
            description="会员", out_trade_no="V3VERDICT01", total=1, openid=openid,
            notify_url="http://merchant.test/notify",
        )  # fmt: skip
        await http.post("/_control/pay", json={"prepay_id": prepay_id})
        attempts = await _settled(http, len(verdicts))

    assert [a["verdict"] for a in attempts] == verdicts
    assert [a["attempt"] for a in attempts] == list(range(1, len(verdicts) + 1))
    assert all(r.headers["Content-Type"] == "application/json" for r in receiver.received)


async def test_every_retry_is_signed_afresh(v3_material: DevMaterial) -> None:
    receiver = V3Receiver(replies=[503, 503])
    async with in_process_v3(v3_material, receiver) as (simulator, http):
        client = _client(simulator, http, v3_material)
        openid = simulator.miniprogram.mint_code().openid
        prepay_id = await client.jsapi_prepay(
            description="会员", out_trade_no="V3RETRY001", total=1, openid=openid,
            notify_url="http://merchant.test/notify",
        )  # fmt: skip
        await http.post("/_control/pay", json={"prepay_id": prepay_id})
        await _settled(http, 3)

    nonces = {request.headers["Wechatpay-Nonce"] for request in receiver.received}
    assert len(nonces) == 3
    for request in receiver.received:
        await client.parse_payment_notify(request.headers, request.content)  # each one verifies


async def test_a_refund_is_processing_then_settles_and_notifies_refund_success(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    client = v3_simulator.client(http)
    prepay_id = await v3_simulator.place_order(client, "V3REFUND001", total=300)
    await v3_simulator.handle.pay(prepay_id)
    accepted = await client.refund(
        out_trade_no="V3REFUND001", out_refund_no="V3R0001", refund=100, total=300,
        notify_url="http://127.0.0.1:9/wechat/refund/v3/notify",
    )  # fmt: skip
    [refund_attempt, *_] = await settled_attempts(v3_simulator.handle, kind="refund")
    notified = await client.parse_refund_notify(
        refund_attempt["headers"], refund_attempt["body"].encode()
    )
    queried = await client.refund_query("V3R0001")
    order = await client.query("V3REFUND001")

    assert accepted.status == "PROCESSING"
    assert json.loads(refund_attempt["body"])["event_type"] == "REFUND.SUCCESS"
    assert json.loads(refund_attempt["body"])["resource"]["original_type"] == "refund"
    assert notified.status == "SUCCESS" and notified.refund_id == accepted.refund_id
    assert notified.amount.refund == 100 and notified.amount.total == 300
    assert "appid" not in v3_simulator.decrypt(refund_attempt["body"])  # §8.7: no appid
    assert queried.status == "SUCCESS" and queried.success_time is not None
    assert order.trade_state == "REFUND"


async def test_the_same_refund_twice_is_one_refund_and_too_much_is_invalid_request(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    client = v3_simulator.client(http)
    await v3_simulator.handle.pay(await v3_simulator.place_order(client, "V3REFUND002", total=300))
    refund: dict[str, Any] = {"out_trade_no": "V3REFUND002", "total": 300}

    first = await client.refund(**refund, out_refund_no="V3R0002", refund=200)
    again = await client.refund(**refund, out_refund_no="V3R0002", refund=200)
    with pytest.raises(WeChatRejected) as too_much:
        await client.refund(**refund, out_refund_no="V3R0003", refund=101)
    with pytest.raises(WeChatRejected) as unpaid:
        await client.refund(out_trade_no="V3NOSUCHONE", total=1, out_refund_no="R4", refund=1)
    with pytest.raises(WeChatRejected) as unknown:
        await client.refund_query("V3NOSUCHREFUND")

    assert first.refund_id == again.refund_id
    assert too_much.value.err_code == "INVALID_REQUEST"
    assert unpaid.value.err_code == "RESOURCE_NOT_EXISTS"
    assert unknown.value.err_code == "RESOURCE_NOT_EXISTS"


def _client(
    simulator: Simulator, http: httpx.AsyncClient, material: DevMaterial
) -> WeChatPayV3Client:
    return v3_client(http, material, api_base=str(http.base_url), appid=simulator.config.appid)


async def _settled(
    http: httpx.AsyncClient, count: int, within: float = 3.0
) -> list[dict[str, object]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        attempts: list[dict[str, object]] = (await http.get("/_control/notifies")).json()
        done = [a for a in attempts if a["verdict"] != "pending"]
        if len(done) >= count or loop.time() > deadline:
            return done
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    ("fault", "status", "event_type"),
    [
        ("refund_abnormal", "ABNORMAL", "REFUND.ABNORMAL"),
        ("refund_closed", "CLOSED", "REFUND.CLOSED"),
    ],
)
async def test_a_refund_that_fails_to_settle_notifies_its_outcome(
    v3_simulator: V3Simulator, http: httpx.AsyncClient, fault: str, status: str, event_type: str
) -> None:
    client = v3_simulator.client(http)
    await v3_simulator.handle.pay(await v3_simulator.place_order(client, "V3REFUND003", total=300))
    await v3_simulator.handle.set_fault(fault, count=1)
    await client.refund(
        out_trade_no="V3REFUND003", out_refund_no="V3R0005", refund=300, total=300,
        notify_url="http://127.0.0.1:9/wechat/refund/v3/notify",
    )  # fmt: skip
    [attempt, *_] = await settled_attempts(v3_simulator.handle, kind="refund")
    notified = await client.parse_refund_notify(attempt["headers"], attempt["body"].encode())
    queried = await client.refund_query("V3R0005")

    assert json.loads(attempt["body"])["event_type"] == event_type
    assert notified.status == queried.status == status
    assert notified.success_time is None
    if status == "CLOSED":  # the money never left: the whole amount is refundable again
        again = await client.refund(
            out_trade_no="V3REFUND003", out_refund_no="V3R0006", refund=300, total=300
        )
        assert again.status == "PROCESSING"


async def test_a_standalone_notify_is_accepted_by_our_client_and_a_flawed_one_is_not(
    v3_material: DevMaterial, http: httpx.AsyncClient
) -> None:
    settings = hermetic_settings()
    client = v3_client(http, v3_material, api_base="http://unused.test", appid=settings.appid)
    transaction = {
        "appid": settings.appid, "mchid": settings.mch_id, "out_trade_no": "V3ALONE0001",
        "transaction_id": "4200000000202611290000000001", "trade_state": "SUCCESS",
        "amount": {"total": 100, "payer_total": 100, "currency": "CNY"},
    }  # fmt: skip

    headers, body = signed_notify(v3_material.config, settings.mch_id, transaction)
    forged = signed_notify(
        v3_material.config, settings.mch_id, transaction, flaw=SignatureFlaw.BAD_SIGNATURE
    )

    assert (await client.parse_payment_notify(headers, body)).out_trade_no == "V3ALONE0001"
    with pytest.raises(InvalidNotification):
        await client.parse_payment_notify(*forged)
