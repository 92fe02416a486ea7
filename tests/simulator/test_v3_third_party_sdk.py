"""An unmodified third-party v3 SDK (wechatpayv3 2.0.4, the ``dev`` extra) against the simulator.

wechatpayv3 has no base-URL option: pointing its core's ``_gate_way`` at the simulator is the one
change. Everything else is stock: it signs its requests, refuses any 2xx answer whose signature
does not verify, and checks and decrypts notifies in its own ``callback()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wechatpayv3 import WeChatPay, WeChatPayType  # type: ignore[import-untyped]

from tests.simulator.v3helpers import NOTIFY_URL, V3Simulator


def sdk_for(simulator: V3Simulator, *, cert_dir: Path | None = None) -> Any:
    """The SDK in public-key mode, or in certificate mode with the certificates in
    ``cert_dir`` (it would fetch them from the real WeChat on construction otherwise)."""
    material = simulator.material
    public_key: dict[str, Any] = {}
    if cert_dir is None:
        public_key = {
            "public_key": material.wechatpay_public_key_pem.decode(),
            "public_key_id": material.wechatpay_public_key_id,
        }
    pay = WeChatPay(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=simulator.mchid,
        private_key=material.merchant_private_key_pem.decode(),
        cert_serial_no=material.config.merchant_serial_no,
        appid=simulator.appid,
        apiv3_key=simulator.api_v3_key,
        notify_url=NOTIFY_URL,
        cert_dir=str(cert_dir) if cert_dir else None,
        timeout=5,
        **public_key,
    )
    pay._core._gate_way = simulator.handle.base_url  # the one change: no base-URL option
    return pay


async def _order(pay: Any, simulator: V3Simulator, out_trade_no: str) -> str:
    _, openid = await simulator.handle.login_code()
    code, message = pay.pay(
        description="示例商城-会员充值",
        out_trade_no=out_trade_no,
        amount={"total": 1, "currency": "CNY"},
        payer={"openid": openid},
    )
    assert code == 200, message
    prepay_id: str = json.loads(message)["prepay_id"]
    return prepay_id


async def test_wechatpayv3_places_queries_and_closes_an_order_verifying_each_answer(
    v3_simulator: V3Simulator,
) -> None:
    pay = sdk_for(v3_simulator)

    prepay_id = await _order(pay, v3_simulator, "SDKV3000001")
    queried_code, queried = pay.query(out_trade_no="SDKV3000001")
    closed_code, _ = pay.close(out_trade_no="SDKV3000001")
    after_code, after = pay.query(out_trade_no="SDKV3000001")
    missing_code, missing = pay.query(out_trade_no="SDKV3NOSUCH")

    assert prepay_id.startswith("wx")
    assert (queried_code, json.loads(queried)["trade_state"]) == (200, "NOTPAY")
    assert closed_code == 204  # its empty body verified too
    assert (after_code, json.loads(after)["trade_state"]) == (200, "CLOSED")
    assert (missing_code, json.loads(missing)["code"]) == (404, "ORDER_NOT_EXIST")


async def test_wechatpayv3_callback_accepts_the_payment_notify(v3_simulator: V3Simulator) -> None:
    pay = sdk_for(v3_simulator)
    prepay_id = await _order(pay, v3_simulator, "SDKV3000002")
    paid = await v3_simulator.handle.pay(prepay_id)
    [attempt, *_] = await v3_simulator.handle.wait_for_notifies(1)

    notified = pay.callback(attempt["headers"], attempt["body"])

    assert notified["event_type"] == "TRANSACTION.SUCCESS"
    assert notified["resource"]["out_trade_no"] == "SDKV3000002"
    assert notified["resource"]["transaction_id"] == paid["transaction_id"]
    assert notified["resource"]["amount"]["total"] == 1


async def test_wechatpayv3_callback_refuses_a_badly_signed_notify(
    v3_simulator: V3Simulator,
) -> None:
    pay = sdk_for(v3_simulator)
    await v3_simulator.handle.set_fault("bad_signature")
    await v3_simulator.handle.pay(await _order(pay, v3_simulator, "SDKV3000003"))
    [attempt, *_] = await v3_simulator.handle.wait_for_notifies(1)

    assert pay.callback(attempt["headers"], attempt["body"]) is None


async def test_wechatpayv3_in_certificate_mode_follows_a_rotation(
    v3_certificate_simulator: V3Simulator, tmp_path: Path
) -> None:
    first = v3_certificate_simulator.material.config.signing_keys[0]
    assert first.certificate_pem is not None
    (tmp_path / f"{first.serial}.pem").write_bytes(first.certificate_pem)  # as downloaded
    pay = sdk_for(v3_certificate_simulator, cert_dir=tmp_path)
    prepay_id = await _order(pay, v3_certificate_simulator, "SDKV3000004")

    rotated = await v3_certificate_simulator.handle.rotate_certificate()
    # An unknown Wechatpay-Serial makes it fetch /v3/certificates, then verify.
    code, queried = pay.query(out_trade_no="SDKV3000004")
    await v3_certificate_simulator.handle.pay(prepay_id)
    [attempt, *_] = await v3_certificate_simulator.handle.wait_for_notifies(1)

    assert (code, json.loads(queried)["trade_state"]) == (200, "NOTPAY")
    assert (tmp_path / f"{rotated['wechatpay_serial']}.pem").exists()
    assert pay.callback(attempt["headers"], attempt["body"])["resource"]["trade_state"] == (
        "SUCCESS"
    )
