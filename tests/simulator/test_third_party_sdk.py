"""An unmodified third-party SDK (wechatpy 1.8.18, the ``bench`` extra) against the simulator."""

from __future__ import annotations

from typing import Any

import pytest

from tests.plugins.simulator import SimulatorHandle

wechatpy_pay = pytest.importorskip("wechatpy.pay", reason="wechatpy comes with the bench extra")


def sdk_for(simulator: SimulatorHandle) -> Any:
    # wechatpy reads its host from a class attribute; everything else is stock.
    local_pay = type(
        "LocalWeChatPay", (wechatpy_pay.WeChatPay,), {"API_BASE_URL": simulator.base_url + "/"}
    )
    settings = simulator.settings
    return local_pay(
        appid=settings.appid,
        api_key=settings.api_key.get_secret_value(),
        mch_id=settings.mch_id,
        timeout=5,
    )


async def test_wechatpy_orders_queries_and_verifies_the_notify(
    fresh_simulator: SimulatorHandle,
) -> None:
    pay = sdk_for(fresh_simulator)
    _, openid = await fresh_simulator.login_code()

    created = pay.order.create(
        trade_type="JSAPI",
        body="示例商城-会员充值",
        total_fee=1,
        notify_url="http://127.0.0.1:9/notify",
        user_id=openid,
        out_trade_no="SDK20231115000001",
        client_ip="203.0.113.7",
    )
    await fresh_simulator.pay(created["prepay_id"])
    queried = pay.order.query(out_trade_no="SDK20231115000001")
    [attempt, *_] = await fresh_simulator.wait_for_notifies(1)
    notify = pay.parse_payment_result(attempt["body"])

    assert created["result_code"] == "SUCCESS"
    assert queried["trade_state"] == "SUCCESS"
    assert notify["out_trade_no"] == "SDK20231115000001"


async def test_wechatpy_sees_wechats_error_codes(fresh_simulator: SimulatorHandle) -> None:
    pay = sdk_for(fresh_simulator)

    with pytest.raises(wechatpy_pay.WeChatPayException) as raised:
        pay.order.query(out_trade_no="NO_SUCH_ORDER")

    assert raised.value.errcode == "ORDERNOTEXIST"
