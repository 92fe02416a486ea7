"""v3 orders over real HTTP with our own ``WeChatPayV3Client`` (PROTOCOL.md §8.1-§8.3, §8.7):
every request authenticated, every answer signed, errors in WeChat's status and code."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from app.wechat.errors import WeChatRejected, WeChatUnavailable
from app.wechat.v3 import AUTH_SCHEME, load_public_key, verify_wechat_signature
from tests.simulator.v3helpers import NOTIFY_URL, V3Simulator, signed_headers


async def test_an_order_is_placed_paid_and_queried_with_every_answer_verified(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    client = v3_simulator.client(http)  # it refuses any answer whose signature fails (§8.3)
    prepay_id = await v3_simulator.place_order(client, "V3ORDER0001", total=888)
    before = await client.query("V3ORDER0001")
    paid = await v3_simulator.handle.pay(prepay_id)
    after = await client.query("V3ORDER0001")

    assert prepay_id.startswith("wx") and len(prepay_id) == 36
    assert before.trade_state == "NOTPAY" and before.transaction_id is None
    assert after.trade_state == "SUCCESS"
    assert after.transaction_id == paid["transaction_id"]
    assert after.amount is not None and after.amount.total == after.amount.payer_total == 888
    assert after.model_extra is not None and after.model_extra["payer"]["openid"]
    assert after.success_time is not None and after.success_time.endswith("+08:00")


async def test_re_entry_returns_the_same_prepay_id_and_a_changed_order_is_refused(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    client = v3_simulator.client(http)
    _, openid = await v3_simulator.handle.login_code()
    order = {"description": "会员", "out_trade_no": "V3REENTRY01", "openid": openid}

    first = await client.jsapi_prepay(**order, total=100, notify_url=NOTIFY_URL)
    again = await client.jsapi_prepay(**order, total=100, notify_url=NOTIFY_URL)
    with pytest.raises(WeChatRejected) as changed:
        await client.jsapi_prepay(**order, total=200, notify_url=NOTIFY_URL)

    assert first == again
    assert changed.value.err_code == "INVALID_REQUEST"


async def test_close_answers_204_signed_and_the_closed_order_cannot_be_paid(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    client = v3_simulator.client(http)
    prepay_id = await v3_simulator.place_order(client, "V3CLOSE0001")

    await client.close("V3CLOSE0001")  # a 204 whose empty body must verify too
    queried = await client.query("V3CLOSE0001")
    with pytest.raises(WeChatRejected) as again:
        await client.close("V3CLOSE0001")
    with pytest.raises(httpx.HTTPStatusError) as paying:
        await v3_simulator.handle.pay(prepay_id)

    assert queried.trade_state == "CLOSED"
    assert again.value.err_code == "ORDER_CLOSED"  # §8.1: 400 ORDER_CLOSED
    assert paying.value.response.status_code == 409


async def test_an_unknown_order_is_404_order_not_exist(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    client = v3_simulator.client(http)

    with pytest.raises(WeChatRejected) as missing:
        await client.query("V3NOSUCHORDER")

    assert missing.value.err_code == "ORDER_NOT_EXIST"  # §8.1: 404 ORDER_NOT_EXIST


async def test_a_request_signed_with_another_key_is_401_sign_error_and_the_error_is_signed(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    body = json.dumps({"mchid": v3_simulator.mchid}).encode()
    path = "/v3/pay/transactions/out-trade-no/V3ANYORDER1/close"
    headers = signed_headers(v3_simulator.signer(), "POST", path, body)
    tampered = body.replace(b"}", b" }")  # signed bytes differ from the bytes sent

    answer = await http.post(v3_simulator.handle.url(path), content=tampered, headers=headers)

    assert answer.status_code == 401
    assert answer.json()["code"] == "SIGN_ERROR"  # §8.1: 401 SIGN_ERROR
    _assert_signed(v3_simulator, answer)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        'WECHATPAY2-SHA256-RSA2048 mchid="1900000109"',
        "Bearer abc",
    ],
)
async def test_a_missing_or_malformed_authorization_is_401_sign_error(
    v3_simulator: V3Simulator, http: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    url = v3_simulator.handle.url(
        f"/v3/pay/transactions/out-trade-no/X123456?mchid={v3_simulator.mchid}"
    )

    answer = await http.get(url, headers=headers)

    assert (answer.status_code, answer.json()["code"]) == (401, "SIGN_ERROR")


async def test_a_stale_request_timestamp_is_401_sign_error(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    path = f"/v3/pay/transactions/out-trade-no/V3STALE0001?mchid={v3_simulator.mchid}"
    stale = str(int(time.time()) - 301)  # §8.3: five minutes either way
    authorization = v3_simulator.signer().authorization("GET", path, b"", timestamp=stale)

    answer = await http.get(v3_simulator.handle.url(path), headers={"Authorization": authorization})

    assert (answer.status_code, answer.json()["code"]) == (401, "SIGN_ERROR")


async def test_a_missing_field_is_400_param_error(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    path = "/v3/pay/transactions/jsapi"
    body = json.dumps({"appid": v3_simulator.appid, "mchid": v3_simulator.mchid}).encode()
    headers = signed_headers(v3_simulator.signer(), "POST", path, body)

    answer = await http.post(v3_simulator.handle.url(path), content=body, headers=headers)

    assert (answer.status_code, answer.json()["code"]) == (400, "PARAM_ERROR")
    _assert_signed(v3_simulator, answer)


async def test_an_unknown_payer_is_refused_as_openid_mismatch(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    client = v3_simulator.client(http)

    with pytest.raises(WeChatUnavailable) as refused:  # §8.1 lists it as a 500
        await client.jsapi_prepay(
            description="会员", out_trade_no="V3STRANGER1", total=1,
            openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", notify_url=NOTIFY_URL,
        )  # fmt: skip

    assert refused.value.err_code == "OPENID_MISMATCH"


def _assert_signed(simulator: V3Simulator, answer: httpx.Response) -> None:
    key = simulator.material.config.signing_keys[0]
    assert answer.headers["Wechatpay-Serial"] == key.serial
    assert answer.headers["Wechatpay-Signature-Type"] == AUTH_SCHEME
    verify_wechat_signature(
        timestamp=answer.headers["Wechatpay-Timestamp"],
        nonce=answer.headers["Wechatpay-Nonce"],
        body=answer.content,
        signature=answer.headers["Wechatpay-Signature"],
        key=load_public_key(key.public_key_pem),
        now=int(time.time()),
    )
