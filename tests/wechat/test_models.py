"""Typed messages (PROTOCOL.md §2, §5, §6): requests refuse bad input, received messages keep
every raw field for signature checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.wechat.models import (
    Coupon,
    OrderQueryRequest,
    OrderQueryResponse,
    PaymentNotify,
    RefundQueryRequest,
    RefundQueryResponse,
    RefundRequest,
    UnifiedOrderRequest,
    WireRefundStatus,
    WireTradeState,
)

ORDER = {
    "body": "示例商城-会员充值",
    "out_trade_no": "ORD20231115000001",
    "total_fee": 1,
    "spbill_create_ip": "203.0.113.7",
    "notify_url": "https://example.com/wxpay/notify",
    "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
}

PAID_NOTIFY = {
    "return_code": "SUCCESS",
    "result_code": "SUCCESS",
    "appid": "wx1234567890abcdef",
    "mch_id": "1900000109",
    "out_trade_no": "ORD20231115000001",
    "transaction_id": "4200001234202311151234567890",
    "total_fee": "100",
    "cash_fee": "90",
    "coupon_fee": "10",
    "coupon_count": "2",
    "coupon_id_0": "C0",
    "coupon_fee_0": "4",
    "coupon_type_0": "CASH",
    "coupon_id_1": "C1",
    "coupon_fee_1": "6",
    "attach": "",
    "sign": "X",
}


def test_unified_order_fields_omit_unset_values_and_keep_integer_fen() -> None:
    fields = UnifiedOrderRequest(**ORDER).to_fields()
    assert fields == {**ORDER, "trade_type": "JSAPI"}
    assert fields["total_fee"] == 1


@pytest.mark.parametrize("total_fee", [1.0, "1", 0, -5, True])
def test_amounts_must_be_positive_integer_fen(total_fee: object) -> None:
    with pytest.raises(ValidationError):
        UnifiedOrderRequest(**{**ORDER, "total_fee": total_fee})


@pytest.mark.parametrize("out_trade_no", ["", "x" * 33, "has space", "中文"])
def test_out_trade_no_follows_wechat_rules(out_trade_no: str) -> None:
    # §2.1: at most 32 characters of [0-9a-zA-Z_-|*@].
    with pytest.raises(ValidationError):
        UnifiedOrderRequest(**{**ORDER, "out_trade_no": out_trade_no})


def test_jsapi_orders_need_the_payer_openid() -> None:
    with pytest.raises(ValidationError, match="openid"):
        UnifiedOrderRequest(**{**ORDER, "openid": None})


def test_notify_url_may_not_carry_a_query_string() -> None:
    with pytest.raises(ValidationError):
        UnifiedOrderRequest(**{**ORDER, "notify_url": "https://x.test/n?a=1"})


def test_requests_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        UnifiedOrderRequest(**{**ORDER, "appid": "wx-other"})


def test_queries_need_an_id() -> None:
    with pytest.raises(ValidationError):
        OrderQueryRequest()
    with pytest.raises(ValidationError):
        RefundQueryRequest()
    assert OrderQueryRequest(out_trade_no="A1").to_fields() == {"out_trade_no": "A1"}


def test_a_refund_cannot_exceed_the_order_total() -> None:
    with pytest.raises(ValidationError, match="refund_fee"):
        RefundRequest(out_trade_no="A1", out_refund_no="R1", total_fee=100, refund_fee=101)


def test_received_messages_keep_raw_fields_and_unknown_extras() -> None:
    notify = PaymentNotify.from_fields(PAID_NOTIFY)
    assert notify.raw == PAID_NOTIFY  # the "" attach included: verify runs over this
    assert notify.total_fee == 100 and notify.cash_fee == 90
    assert notify.attach is None  # empty counts as absent
    assert notify.extra_field("coupon_type_0") == "CASH"
    assert notify.is_paid


def test_coupon_groups_are_read_from_their_n_fields() -> None:
    # §5: coupon_*_$n, $n from 0.
    assert PaymentNotify.from_fields(PAID_NOTIFY).coupons == [
        Coupon(coupon_id="C0", coupon_fee=4, coupon_type="CASH"),
        Coupon(coupon_id="C1", coupon_fee=6),
    ]


def test_a_notify_missing_a_counted_coupon_is_invalid() -> None:
    fields = {k: v for k, v in PAID_NOTIFY.items() if k != "coupon_fee_1"}
    with pytest.raises(ValidationError, match="coupon 1"):
        PaymentNotify.from_fields(fields)


def test_a_paid_notify_must_carry_the_payment() -> None:
    fields = {k: v for k, v in PAID_NOTIFY.items() if k != "transaction_id"}
    with pytest.raises(ValidationError):
        PaymentNotify.from_fields(fields)


@pytest.mark.parametrize("total_fee", ["1.5", "abc", "-1"])
def test_received_amounts_must_be_whole_fen(total_fee: str) -> None:
    with pytest.raises(ValidationError):
        PaymentNotify.from_fields({**PAID_NOTIFY, "total_fee": total_fee})


@pytest.mark.parametrize(
    "amount", ["990.0", " 990 ", "990 ", "+990", "0990", "9_90", "\uff19\uff19\uff10", "99\u0660"]
)
@pytest.mark.parametrize("field", ["total_fee", "cash_fee", "coupon_fee", "coupon_count"])
def test_received_integers_are_bare_ascii_digits_only(field: str, amount: str) -> None:
    # WeChat writes Int fields as bare digits (PROTOCOL.md §5); any other spelling of a signed
    # amount is not WeChat's, even when lax int parsing would read it as the same number.
    with pytest.raises(ValidationError, match="ASCII digits"):
        PaymentNotify.from_fields({**PAID_NOTIFY, field: amount})


def test_zero_and_ten_digit_amounts_are_still_read() -> None:
    assert PaymentNotify.from_fields({**PAID_NOTIFY, "coupon_fee": "0"}).coupon_fee == 0
    notify = PaymentNotify.from_fields({**PAID_NOTIFY, "total_fee": "9999999999"})
    assert notify.total_fee == 9_999_999_999


def test_order_query_reads_trade_state_and_refuses_unknown_states() -> None:
    base = {"return_code": "SUCCESS", "result_code": "SUCCESS", "out_trade_no": "A1"}
    query = OrderQueryResponse.from_fields({**base, "trade_state": "NOTPAY"})
    assert query.trade_state is WireTradeState.NOTPAY
    with pytest.raises(ValidationError):
        OrderQueryResponse.from_fields({**base, "trade_state": "SOMETHING_NEW"})
    with pytest.raises(ValidationError, match="transaction_id"):
        OrderQueryResponse.from_fields({**base, "trade_state": "SUCCESS"})


def test_refund_query_collects_the_n_groups() -> None:
    # §6.4: out_refund_no_$n, refund_fee_$n, refund_status_$n, ...
    fields = {
        "return_code": "SUCCESS",
        "result_code": "SUCCESS",
        "transaction_id": "T1",
        "out_trade_no": "A1",
        "total_fee": "100",
        "refund_count": "2",
        "out_refund_no_0": "R0",
        "refund_id_0": "W0",
        "refund_fee_0": "30",
        "refund_status_0": "SUCCESS",
        "refund_recv_accout_0": "支付用户零钱",
        "out_refund_no_1": "R1",
        "refund_id_1": "W1",
        "refund_fee_1": "20",
        "refund_status_1": "PROCESSING",
        "coupon_refund_fee_0_0": "1",
    }
    query = RefundQueryResponse.from_fields(fields)
    assert [(r.out_refund_no, r.refund_fee, r.refund_status) for r in query.refunds] == [
        ("R0", 30, WireRefundStatus.SUCCESS),
        ("R1", 20, WireRefundStatus.PROCESSING),
    ]
    assert query.refunds[0].refund_recv_accout == "支付用户零钱"
    assert query.extra_field("coupon_refund_fee_0_0") == "1"
    with pytest.raises(ValidationError):
        RefundQueryResponse.from_fields({**fields, "refund_count": "3"})
