"""One simulator, both API versions at once (the migration): one merchant and one set of orders;
each order is notified in the version it was placed with and answered in the version asked."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.wechat.signing import SignType, new_nonce, sign, verify
from app.wechat.xmlcodec import from_xml, to_xml
from tests.simulator.v3helpers import NOTIFY_URL, V3Simulator, settled_attempts


async def _v2_call(
    simulator: V3Simulator, http: httpx.AsyncClient, path: str, fields: dict[str, Any]
) -> dict[str, str]:
    settings = simulator.handle.settings
    api_key = settings.api_key.get_secret_value()
    full = {"appid": settings.appid, "mch_id": settings.mch_id, "nonce_str": new_nonce(), **fields}
    full["sign"] = sign(full, api_key, SignType.MD5)
    answer = await http.post(simulator.handle.url(path), content=to_xml(full))
    reply = from_xml(answer.content)
    assert verify(reply, api_key, SignType.MD5), reply
    return reply


async def _place_v2(simulator: V3Simulator, http: httpx.AsyncClient, out_trade_no: str) -> str:
    _, openid = await simulator.handle.login_code()
    reply = await _v2_call(
        simulator,
        http,
        "/pay/unifiedorder",
        {
            "body": "会员",
            "out_trade_no": out_trade_no,
            "total_fee": 100,
            "spbill_create_ip": "203.0.113.7",
            "notify_url": NOTIFY_URL,
            "trade_type": "JSAPI",
            "openid": openid,
        },
    )
    return reply["prepay_id"]


async def _place(
    version: str, simulator: V3Simulator, http: httpx.AsyncClient, out_trade_no: str
) -> str:
    if version == "v2":
        return await _place_v2(simulator, http, out_trade_no)
    return await simulator.place_order(simulator.client(http), out_trade_no, total=100)


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_an_order_is_notified_in_the_version_it_was_placed_with(
    v3_simulator: V3Simulator, http: httpx.AsyncClient, version: str
) -> None:
    prepay_id = await _place(version, v3_simulator, http, f"BOTH{version.upper()}0001")
    await v3_simulator.handle.pay(prepay_id)  # the control API pays either version
    [attempt, *_] = await v3_simulator.handle.wait_for_notifies(1)
    [order] = await v3_simulator.handle.orders()

    assert attempt["api_version"] == order["api_version"] == version
    if version == "v3":
        transaction = await v3_simulator.client(http).parse_payment_notify(
            attempt["headers"], attempt["body"].encode()
        )
        assert transaction.out_trade_no == "BOTHV30001"
    else:
        api_key = v3_simulator.handle.settings.api_key.get_secret_value()
        notify = from_xml(attempt["body"].encode())
        assert verify(notify, api_key, SignType.MD5)
        assert notify["out_trade_no"] == "BOTHV20001" and attempt["headers"] == {}


async def test_a_v2_and_a_v3_order_live_side_by_side_each_queryable_in_either_shape(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    client = v3_simulator.client(http)
    v2_prepay = await _place_v2(v3_simulator, http, "SIDEV2000001")
    v3_prepay = await v3_simulator.place_order(client, "SIDEV3000001", total=100)
    await v3_simulator.handle.pay(v2_prepay)
    await v3_simulator.handle.pay(v3_prepay)
    attempts = [
        *await settled_attempts(v3_simulator.handle, out_trade_no="SIDEV2000001", attempt=1),
        *await settled_attempts(v3_simulator.handle, out_trade_no="SIDEV3000001", attempt=1),
    ]

    v2_through_v3 = await client.query("SIDEV2000001")
    v3_through_v2 = await _v2_call(
        v3_simulator, http, "/pay/orderquery", {"out_trade_no": "SIDEV3000001"}
    )

    versions = {a["out_trade_no"]: a["api_version"] for a in attempts}
    assert versions == {"SIDEV2000001": "v2", "SIDEV3000001": "v3"}
    assert v2_through_v3.trade_state == "SUCCESS" and v2_through_v3.amount is not None
    assert v3_through_v2["trade_state"] == "SUCCESS" and v3_through_v2["total_fee"] == "100"
    v3_body = next(a["body"] for a in attempts if a["api_version"] == "v3")
    assert json.loads(v3_body)["resource_type"] == "encrypt-resource"


async def test_the_cashier_page_and_the_order_list_show_each_orders_version(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    await _place_v2(v3_simulator, http, "PAGEV2000001")
    await v3_simulator.place_order(v3_simulator.client(http), "PAGEV3000001")

    page = (await http.get(v3_simulator.handle.url("/"))).text
    orders = {o["out_trade_no"]: o for o in await v3_simulator.handle.orders()}

    assert "<th>api</th>" in page and "o.api_version" in page
    assert orders["PAGEV2000001"]["api_version"] == "v2"
    assert orders["PAGEV3000001"]["api_version"] == "v3"
    assert orders["PAGEV3000001"]["body"] == "示例商城-会员充值"  # v3's description
