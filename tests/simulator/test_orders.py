"""Order query, close order, and the user paying through the control API (§6.1, §6.2)."""

from __future__ import annotations

from datetime import timedelta

from app.wechat.timefmt import to_wechat_time as beijing_stamp
from tests.simulator.helpers import Merchant


async def test_an_unpaid_order_is_notpay_without_payment_fields(merchant: Merchant) -> None:
    order = await merchant.place_order(attach="cart-7")

    reply = await merchant.query(order["out_trade_no"])

    assert (reply["trade_state"], reply["trade_state_desc"]) == ("NOTPAY", "订单未支付")
    assert (reply["total_fee"], reply["attach"]) == ("100", "cart-7")
    assert "transaction_id" not in reply and "time_end" not in reply
    assert merchant.is_signed(reply)


async def test_a_paid_order_shows_the_payment(merchant: Merchant) -> None:
    order = await merchant.paid_order()

    reply = await merchant.query(order["out_trade_no"])

    assert reply["trade_state"] == "SUCCESS"
    assert reply["transaction_id"] == order["transaction_id"]
    assert len(reply["transaction_id"]) == 28 and reply["transaction_id"].isdigit()
    assert (reply["openid"], reply["cash_fee"]) == (order["openid"], "100")
    assert len(reply["time_end"]) == 14


async def test_a_paid_order_can_be_found_by_transaction_id(merchant: Merchant) -> None:
    order = await merchant.paid_order()

    reply = await merchant.call("/pay/orderquery", {"transaction_id": order["transaction_id"]})

    assert reply["out_trade_no"] == order["out_trade_no"]


async def test_an_unknown_order_is_ordernotexist(merchant: Merchant) -> None:
    reply = await merchant.query("NO_SUCH_ORDER")

    assert (reply["result_code"], reply["err_code"]) == ("FAIL", "ORDERNOTEXIST")


async def test_a_query_without_an_order_number_is_lack_params(merchant: Merchant) -> None:
    reply = await merchant.call("/pay/orderquery", {})

    assert reply["err_code"] == "LACK_PARAMS"


async def test_a_failed_payment_is_payerror_and_can_be_retried(merchant: Merchant) -> None:
    order = await merchant.place_order()

    failed = await merchant.pay(order["prepay_id"], "FAIL")
    state_after_failure = (await merchant.query(order["out_trade_no"]))["trade_state"]
    retried = await merchant.pay(order["prepay_id"])

    assert failed.json()["trade_state"] == state_after_failure == "PAYERROR"
    assert retried.json()["trade_state"] == "SUCCESS"


async def test_a_cancelled_payment_changes_nothing(merchant: Merchant) -> None:
    order = await merchant.place_order()

    await merchant.pay(order["prepay_id"], "CANCEL")

    assert (await merchant.query(order["out_trade_no"]))["trade_state"] == "NOTPAY"
    assert await merchant.notifies() == []


async def test_an_order_cannot_be_paid_twice(merchant: Merchant) -> None:
    order = await merchant.paid_order()

    again = await merchant.pay(order["prepay_id"])

    assert again.status_code == 409


async def test_an_unknown_prepay_id_cannot_be_paid(merchant: Merchant) -> None:
    response = await merchant.pay("wx20231115061320123456789abcdef0000")

    assert response.status_code == 404


async def test_a_prepay_id_older_than_two_hours_cannot_be_paid(merchant: Merchant) -> None:
    order = await merchant.place_order()
    merchant.simulator.clock.advance(2 * 3600)

    response = await merchant.pay(order["prepay_id"])

    assert response.status_code == 409
    assert "expired" in response.json()["detail"]


async def test_an_order_past_time_expire_cannot_be_paid_but_still_shows_notpay(
    merchant: Merchant,
) -> None:
    expire = beijing_stamp(merchant.simulator.clock.now() + timedelta(minutes=10))
    order = await merchant.place_order(time_expire=expire)
    merchant.simulator.clock.advance(11 * 60)

    response = await merchant.pay(order["prepay_id"])

    assert response.status_code == 409
    assert (await merchant.query(order["out_trade_no"]))["trade_state"] == "NOTPAY"


async def test_closing_an_unpaid_order_makes_it_closed_and_unpayable(merchant: Merchant) -> None:
    order = await merchant.place_order()

    reply = await merchant.call("/pay/closeorder", {"out_trade_no": order["out_trade_no"]})
    paying = await merchant.pay(order["prepay_id"])

    assert reply["result_code"] == "SUCCESS"
    assert merchant.is_signed(reply)
    assert (await merchant.query(order["out_trade_no"]))["trade_state"] == "CLOSED"
    assert paying.status_code == 409


async def test_closing_twice_is_orderclosed(merchant: Merchant) -> None:
    order = await merchant.place_order()
    await merchant.call("/pay/closeorder", {"out_trade_no": order["out_trade_no"]})

    reply = await merchant.call("/pay/closeorder", {"out_trade_no": order["out_trade_no"]})

    assert reply["err_code"] == "ORDERCLOSED"


async def test_closing_a_paid_order_is_orderpaid(merchant: Merchant) -> None:
    order = await merchant.paid_order()

    reply = await merchant.call("/pay/closeorder", {"out_trade_no": order["out_trade_no"]})

    assert reply["err_code"] == "ORDERPAID"
    assert (await merchant.query(order["out_trade_no"]))["trade_state"] == "SUCCESS"


async def test_closing_an_unknown_order_is_ordernotexist(merchant: Merchant) -> None:
    reply = await merchant.call("/pay/closeorder", {"out_trade_no": "NO_SUCH_ORDER"})

    assert reply["err_code"] == "ORDERNOTEXIST"


async def test_the_control_api_lists_orders_newest_first(merchant: Merchant) -> None:
    first = await merchant.place_order()
    second = await merchant.paid_order()

    orders = (await merchant.http.get("/_control/orders")).json()

    assert [o["out_trade_no"] for o in orders] == [second["out_trade_no"], first["out_trade_no"]]
    assert [o["trade_state"] for o in orders] == ["SUCCESS", "NOTPAY"]
