"""WeChat Pay v3 behind the payment-gateway port: v3's answers as our types (PROTOCOL.md §8).

Runs the v3 client against the stand-in WeChat of ``test_v3client`` (it checks our
Authorization and signs its answers); what is asserted here is the mapping onto the port.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.adapters.wechatpay_v3 import UnprovenRejection, WeChatPayV3Gateway
from app.gateway import (
    CloseOutcome,
    PaymentResult,
    PrepayOrder,
    RefundOrder,
    RefundOutcome,
    RefusalKind,
)
from app.orders.states import OrderStatus
from app.refunds.states import RefundStatus
from app.wechat.errors import InvalidNotification, WeChatRejected, WeChatUnavailable
from app.wechat.timefmt import to_rfc3339
from app.wechat.v3client import WeChatPayV3Client
from tests.wechat.test_v3client import APPID, MCHID, REFUND, _notify, signed, wechat

__all__ = ["wechat"]  # the stand-in WeChat fixture, used here too

Answer = Callable[[httpx.Request], httpx.Response]
NO = "20261127031500K3J9QX2M7ZPA"
PAID = {
    "appid": APPID, "mchid": MCHID, "out_trade_no": NO, "trade_state": "SUCCESS",
    "transaction_id": "4200001234202311151234567890", "bank_type": "CMC",
    "success_time": "2026-11-27T11:16:03+08:00",
    "amount": {"total": 990, "payer_total": 890, "currency": "CNY"},
}  # fmt: skip


def gateway(make: Callable[[list[Answer]], WeChatPayV3Client], *answers: Answer) -> Any:
    return WeChatPayV3Gateway(
        make(list(answers)),
        notify_url="https://example.com/wechat/pay/v3/notify",
        refund_notify_url="https://example.com/wechat/pay/v3/refund-notify",
    )


def answer(status: int, body: dict[str, Any] | None = None) -> Answer:
    content = b"" if body is None else json.dumps(body).encode()
    return lambda request: signed(status, content)


def refusal(status: int, code: str) -> Answer:
    """A refusal as WeChat Pay sends it: signed (§8.3)."""
    content = json.dumps({"code": code, "message": code}).encode()
    return lambda request: signed(status, content)


def unsigned(status: int, code: str) -> Answer:
    """A refusal anyone could have sent: a proxy's error page, a wrong host."""
    return lambda request: httpx.Response(status, json={"code": code, "message": code})


async def test_prepay_sends_the_stored_order_with_its_expiry_in_rfc3339(wechat: Any) -> None:
    sent: list[dict[str, Any]] = []

    def accept(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return signed(200, b'{"prepay_id":"wx201410272009395522657a690389285100"}')

    order = PrepayOrder(NO, "短信平台-短信套餐购买", 990, "oUpF8u", "203.0.113.9",
                        dt.datetime(2026, 11, 27, 3, 45, tzinfo=dt.UTC), "p1x1")  # fmt: skip

    prepay_id = await gateway(wechat, accept).prepay(order)

    assert prepay_id == "wx201410272009395522657a690389285100"
    assert sent[0]["time_expire"] == "2026-11-27T11:45:00+08:00"
    assert sent[0]["amount"] == {"total": 990, "currency": "CNY"}
    assert sent[0]["notify_url"] == "https://example.com/wechat/pay/v3/notify"


async def test_a_paid_query_is_our_payment_in_utc(wechat: Any) -> None:
    report = await gateway(wechat, answer(200, PAID)).query(NO)

    assert report is not None and report.status is OrderStatus.SUCCESS
    assert report.payment == PaymentResult(
        out_trade_no=NO,
        transaction_id="4200001234202311151234567890",
        total_fee=990,  # amount.total, not what the payer paid after coupons
        cash_fee=890,
        bank_type="CMC",
        paid_at=dt.datetime(2026, 11, 27, 3, 16, 3, tzinfo=dt.UTC),
    )


async def test_an_order_wechat_never_saw_is_none_and_an_unpaid_one_has_no_payment(
    wechat: Any,
) -> None:
    unpaid = {**PAID, "trade_state": "NOTPAY", "transaction_id": None, "amount": None}
    never = await gateway(wechat, refusal(404, "ORDER_NOT_EXIST")).query(NO)
    report = await gateway(wechat, answer(200, unpaid)).query(NO)

    assert never is None
    assert report is not None and (report.status, report.payment) == (OrderStatus.NOTPAY, None)


@pytest.mark.parametrize(
    ("answers", "outcome"),
    [
        ([answer(204)], CloseOutcome.CLOSED),
        ([refusal(400, "ORDER_CLOSED")], CloseOutcome.CLOSED),
        ([refusal(404, "ORDER_NOT_EXIST")], CloseOutcome.CLOSED),
        # Refused, and the order turns out paid: the payment is to be recorded.
        ([refusal(403, "TRADE_ERROR"), answer(200, PAID)], CloseOutcome.PAID),
        # Refused, and WeChat Pay says (signed) it has no such order: nobody can pay it.
        ([refusal(403, "TRADE_ERROR"), refusal(404, "ORDER_NOT_EXIST")], CloseOutcome.CLOSED),
    ],
)
async def test_close(wechat: Any, answers: list[Answer], outcome: CloseOutcome) -> None:
    assert await gateway(wechat, *answers).close(NO) is outcome


@pytest.mark.parametrize(
    "not_found",
    [
        unsigned(404, "ORDER_NOT_EXIST"),  # the right words, from anyone
        refusal(404, "NOT_FOUND"),  # signed, but not the answer for "no such order"
        refusal(400, "ORDER_NOT_EXIST"),  # signed, with the wrong status
    ],
)
async def test_a_not_found_that_is_not_wechat_pays_own_decides_nothing(
    wechat: Any, not_found: Answer
) -> None:
    """Read as "no such order", such an answer would let the sweep close an order that was in
    fact paid; it is "ask again later" instead."""
    with pytest.raises(UnprovenRejection, match="not WeChat Pay's signed 404 ORDER_NOT_EXIST"):
        await gateway(wechat, not_found).query(NO)


@pytest.mark.parametrize(
    "refused",
    [
        unsigned(400, "ORDER_CLOSED"),
        unsigned(404, "ORDER_NOT_EXIST"),
        refusal(404, "ORDER_CLOSED"),  # signed, with a status WeChat gives no such meaning
    ],
)
async def test_an_unsigned_closed_or_unknown_does_not_close_an_order(
    wechat: Any, refused: Answer
) -> None:
    # The query that follows is asked instead; a paid order is reported paid, not closed.
    assert await gateway(wechat, refused, answer(200, PAID)).close(NO) is CloseOutcome.PAID
    closed = {**PAID, "trade_state": "CLOSED", "transaction_id": None, "amount": None}
    assert await gateway(wechat, refused, answer(200, closed)).close(NO) is CloseOutcome.CLOSED
    with pytest.raises(UnprovenRejection):
        await gateway(wechat, refused, unsigned(404, "ORDER_NOT_EXIST")).close(NO)


async def test_a_close_refused_for_an_unpaid_order_is_wechats_refusal(wechat: Any) -> None:
    unpaid = {**PAID, "trade_state": "NOTPAY", "transaction_id": None, "amount": None}

    with pytest.raises(WeChatRejected):
        await gateway(wechat, refusal(403, "TRADE_ERROR"), answer(200, unpaid)).close(NO)


REFUND_ORDER = RefundOrder(NO, REFUND["out_refund_no"], 990, 400, "test")


async def test_an_accepted_refund_is_wechats_refund_id(wechat: Any) -> None:
    refund_id = await gateway(wechat, answer(200, REFUND)).refund(REFUND_ORDER)

    assert refund_id == REFUND["refund_id"]


async def test_not_enough_money_means_later_not_failed(wechat: Any) -> None:
    # §8.1: 403 NOT_ENOUGH; the refund stays PENDING and the sweep sends it again.
    with pytest.raises(WeChatUnavailable):
        await gateway(wechat, refusal(403, "NOT_ENOUGH")).refund(REFUND_ORDER)


@pytest.mark.parametrize(
    ("status", "ours"),
    [
        ("PROCESSING", RefundStatus.PROCESSING),
        ("SUCCESS", RefundStatus.SUCCESS),
        ("ABNORMAL", RefundStatus.CHANGE),
        ("CLOSED", RefundStatus.REFUNDCLOSE),
    ],
)
async def test_v3_refund_states_are_ours(wechat: Any, status: str, ours: RefundStatus) -> None:
    report = await gateway(wechat, answer(200, {**REFUND, "status": status})).refund_query(
        REFUND["out_refund_no"]
    )

    assert report is not None
    assert report.outcome == RefundOutcome(ours, REFUND["refund_id"], None)


async def test_a_refund_wechat_never_saw_is_none(wechat: Any) -> None:
    report = await gateway(wechat, refusal(404, "RESOURCE_NOT_EXISTS")).refund_query("R1")

    assert report is None


@pytest.mark.parametrize(
    "not_found",
    [
        unsigned(404, "RESOURCE_NOT_EXISTS"),
        refusal(404, "NOT_FOUND"),
        refusal(400, "RESOURCE_NOT_EXISTS"),
    ],
)
async def test_a_refund_not_found_that_is_not_wechat_pays_own_decides_nothing(
    wechat: Any, not_found: Answer
) -> None:
    # Read as "never seen", it would let the refund be sent again on a stranger's word.
    with pytest.raises(UnprovenRejection):
        await gateway(wechat, not_found).refund_query("R1")


async def test_a_genuine_payment_notify_is_our_payment(wechat: Any) -> None:
    body = _notify(PAID)

    notice = await gateway(wechat).parse_payment_notify(body, signed(200, body).headers)

    assert notice.out_trade_no == NO
    assert notice.payment is not None and notice.payment.total_fee == 990
    assert json.loads(notice.audit)["transaction_id"] == PAID["transaction_id"]


async def test_a_verified_notify_that_is_not_a_payment_is_refused(wechat: Any) -> None:
    body = _notify({**PAID, "trade_state": "CLOSED"})

    with pytest.raises(InvalidNotification) as refused:
        await gateway(wechat).parse_payment_notify(body, signed(200, body).headers)

    assert refused.value.kind is RefusalKind.PROTOCOL


def test_v3_replies_are_204_or_a_non_2xx_fail() -> None:
    # §8.5: WeChat decides on the status; a 200 with FAIL would count as success.
    v3 = WeChatPayV3Gateway.__new__(WeChatPayV3Gateway)

    ok = v3.notify_reply(True, "OK", 200)
    failed = v3.notify_reply(False, "BAD_SIGNATURE", 200)

    assert (ok.status_code, ok.body) == (204, b"")
    assert failed.status_code >= 400
    assert json.loads(failed.body) == {"code": "FAIL", "message": "BAD_SIGNATURE"}


def test_times_go_out_in_beijing_rfc3339() -> None:
    moment = dt.datetime(2018, 6, 8, 2, 34, 56, tzinfo=dt.UTC)

    assert to_rfc3339(moment) == "2018-06-08T10:34:56+08:00"


# The reason is what gets stored with the order or refund and shown to the merchant: WeChat's
# Request-ID belongs in it for a support ticket, unless it is not an id.
@pytest.mark.parametrize(
    ("request_id", "reason"),
    [
        ("08F4B2A1B0-1F0E", "参数错误 (Request-ID 08F4B2A1B0-1F0E)"),
        ("<script>x</script>", "参数错误"),
    ],
    ids=["an id", "not an id"],
)
async def test_a_refusal_keeps_wechats_request_id_for_a_support_ticket(
    wechat: Any, request_id: str, reason: str
) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        body = {"code": "PARAM_ERROR", "message": "参数错误"}
        return httpx.Response(400, json=body, headers={"Request-ID": request_id})

    with pytest.raises(WeChatRejected) as rejected:
        await gateway(wechat, refused).refund(REFUND_ORDER)

    assert rejected.value.reason == reason
    assert rejected.value.err_code == "PARAM_ERROR"
