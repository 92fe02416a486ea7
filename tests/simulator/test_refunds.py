"""Refunds, refund query and the encrypted refund notify (§6.3-§6.5)."""

from __future__ import annotations

from typing import Any

from app.wechat.crypto import decrypt_req_info, encrypt_req_info
from app.wechat.xmlcodec import from_xml
from tests.simulator.helpers import Merchant

REFUND_NOTIFY_URL = "http://merchant.test/wechat/refund/notify"

# PROTOCOL.md §10 L4: published with the API key 0123456789abcdefghijklmnopqrstuv.
L4_KEY = "0123456789abcdefghijklmnopqrstuv"
L4_REQ_INFO_PREFIX = "T7M6SCcc3K2tdBPQJ0hHSC5bpP6SbJXnCdRzJn4V/e11M5vdhwvVcD6MqudXSckudMQzz4Tt"
L4_PLAINTEXT_PREFIX = b"<root><out_refund_no><![CDATA[RF20231115000001]]></out_refund_no>"


async def refund(merchant: Merchant, order: dict[str, Any], **fields: Any) -> dict[str, str]:
    request = {
        "out_trade_no": order["out_trade_no"],
        "out_refund_no": "RF" + order["out_trade_no"],
        "total_fee": 100,
        "refund_fee": 100,
    }
    return await merchant.call("/secapi/pay/refund", request | fields)


def test_req_info_encryption_matches_the_published_vector() -> None:
    plaintext = L4_PLAINTEXT_PREFIX + b"<out_trade_no><![CDATA[ORD20231115000001]]></out_trade_no>"

    assert encrypt_req_info(plaintext, L4_KEY).startswith(L4_REQ_INFO_PREFIX)
    assert decrypt_req_info(encrypt_req_info(plaintext, L4_KEY), L4_KEY) == plaintext


async def test_a_refund_is_accepted_and_settles_to_success(merchant: Merchant) -> None:
    order = await merchant.paid_order()

    accepted = await refund(merchant, order, refund_fee=30)
    settled = await merchant.call("/pay/refundquery", {"out_trade_no": order["out_trade_no"]})
    await merchant.settled_notifies(1)  # the payment notify; the refund settles meanwhile
    later = await merchant.call("/pay/refundquery", {"out_trade_no": order["out_trade_no"]})

    assert accepted["result_code"] == "SUCCESS"
    assert (accepted["refund_fee"], accepted["total_fee"]) == ("30", "100")
    assert len(accepted["refund_id"]) == 29
    assert settled["refund_status_0"] in ("PROCESSING", "SUCCESS")
    assert later["refund_status_0"] == "SUCCESS"
    assert (await merchant.query(order["out_trade_no"]))["trade_state"] == "REFUND"


async def test_the_same_out_refund_no_refunds_only_once(merchant: Merchant) -> None:
    order = await merchant.paid_order()

    first = await refund(merchant, order, refund_fee=60)
    again = await refund(merchant, order, refund_fee=60)
    query = await merchant.call("/pay/refundquery", {"out_trade_no": order["out_trade_no"]})

    assert again["result_code"] == "SUCCESS"
    assert again["refund_id"] == first["refund_id"]
    assert query["refund_count"] == "1"


async def test_the_same_out_refund_no_with_another_amount_is_param_error(
    merchant: Merchant,
) -> None:
    order = await merchant.paid_order()
    await refund(merchant, order, refund_fee=60)

    reply = await refund(merchant, order, refund_fee=50)

    assert reply["err_code"] == "PARAM_ERROR"


async def test_refunds_together_cannot_exceed_the_order_amount(merchant: Merchant) -> None:
    order = await merchant.paid_order()
    await refund(merchant, order, out_refund_no="R1", refund_fee=60)

    over = await refund(merchant, order, out_refund_no="R2", refund_fee=41)
    rest = await refund(merchant, order, out_refund_no="R3", refund_fee=40)

    assert (over["err_code"], over["err_code_des"]) == ("ERROR", "累计退款金额大于支付金额")
    assert rest["result_code"] == "SUCCESS"


async def test_a_total_fee_other_than_the_orders_is_param_error(merchant: Merchant) -> None:
    order = await merchant.paid_order()

    reply = await refund(merchant, order, total_fee=99, refund_fee=10)

    assert reply["err_code"] == "PARAM_ERROR"


async def test_an_unpaid_order_cannot_be_refunded(merchant: Merchant) -> None:
    order = await merchant.place_order()

    reply = await refund(merchant, order)

    assert reply["err_code"] == "ORDERNOTEXIST"


async def test_a_refund_without_its_amounts_is_lack_params(merchant: Merchant) -> None:
    order = await merchant.paid_order()

    reply = await refund(merchant, order, refund_fee=None)

    assert (reply["err_code"], reply["err_code_des"]) == ("LACK_PARAMS", "缺少参数refund_fee")


async def test_refunds_can_be_queried_by_each_identifier(merchant: Merchant) -> None:
    order = await merchant.paid_order()
    accepted = await refund(merchant, order, refund_fee=10)
    keys = {
        "refund_id": accepted["refund_id"],
        "out_refund_no": accepted["out_refund_no"],
        "transaction_id": order["transaction_id"],
        "out_trade_no": order["out_trade_no"],
    }

    for name, value in keys.items():
        reply = await merchant.call("/pay/refundquery", {name: value})

        assert reply["refund_id_0"] == accepted["refund_id"], name
        assert merchant.is_signed(reply)


async def test_an_order_without_refunds_is_refundnotexist(merchant: Merchant) -> None:
    order = await merchant.paid_order()

    reply = await merchant.call("/pay/refundquery", {"out_trade_no": order["out_trade_no"]})
    unknown = await merchant.call("/pay/refundquery", {"out_refund_no": "NOPE"})

    assert reply["err_code"] == unknown["err_code"] == "REFUNDNOTEXIST"


async def test_refund_queries_page_ten_at_a_time(merchant: Merchant) -> None:
    order = await merchant.paid_order()
    for n in range(12):
        await refund(merchant, order, out_refund_no=f"R{n:02d}", refund_fee=1)
    query = {"out_trade_no": order["out_trade_no"]}

    first = await merchant.call("/pay/refundquery", query)
    second = await merchant.call("/pay/refundquery", query | {"offset": 10})

    assert (first["total_refund_count"], first["refund_count"]) == ("12", "10")
    assert (second["refund_count"], second["out_refund_no_0"]) == ("2", "R10")


async def test_a_settled_refund_sends_an_encrypted_unsigned_notify(merchant: Merchant) -> None:
    order = await merchant.paid_order()
    accepted = await refund(merchant, order, refund_fee=30, notify_url=REFUND_NOTIFY_URL)

    attempts = await merchant.settled_notifies(2)
    refund_attempt = next(a for a in attempts if a["kind"] == "refund")
    outer = from_xml(refund_attempt["body"].encode())
    details = from_xml(decrypt_req_info(outer["req_info"], merchant.config.api_key), root="root")

    assert refund_attempt["url"] == REFUND_NOTIFY_URL
    assert "sign" not in outer
    assert outer["appid"] == merchant.config.appid
    assert details["refund_id"] == accepted["refund_id"]
    assert (details["refund_fee"], details["refund_status"]) == ("30", "SUCCESS")


async def test_refund_faults_settle_as_change_or_refundclose_in_v2_names(
    merchant: Merchant,
) -> None:
    """§6.4: v2 calls v3's ABNORMAL ``CHANGE`` and CLOSED ``REFUNDCLOSE``."""
    statuses = []
    for fault in ("refund_abnormal", "refund_closed"):
        order = await merchant.paid_order()
        await merchant.set_fault(fault, out_trade_no=order["out_trade_no"])
        await refund(merchant, order, notify_url=REFUND_NOTIFY_URL)
        await merchant.settled_notifies(2 * len(statuses) + 2)  # payments and refunds so far
        query = await merchant.call("/pay/refundquery", {"out_trade_no": order["out_trade_no"]})
        statuses.append(query["refund_status_0"])

    assert statuses == ["CHANGE", "REFUNDCLOSE"]
