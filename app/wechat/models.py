"""Typed WeChat Pay v2 messages (PROTOCOL.md §2, §5, §6). Amounts are ``int`` fen.

Requests forbid unknown fields and become the dict to sign and send with ``to_fields``; the
client adds ``appid``, ``mch_id``, ``nonce_str``, ``sign_type`` and ``sign``.

Everything received is built with ``from_fields`` from the raw parsed dict, which the model keeps
(``raw``) so the signature is always checked over exactly what arrived, never over the model.
Unknown fields (``coupon_id_0``, future additions) are kept as text extras; empty values count as
absent, as they do in WeChat's signing rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

Fen = Annotated[int, Field(strict=True, ge=0)]
PositiveFen = Annotated[int, Field(strict=True, ge=1, le=9_999_999_999)]
MAX_FEN = 9_999_999_999
_ASCII_DIGITS = re.compile(r"0|[1-9][0-9]{0,9}")  # no sign, no spaces, no leading zeros


def _ascii_digits(value: object) -> object:
    """WeChat writes Int fields as bare ASCII digits. Pydantic's lax int would also read
    "990.0", " 990 ", "+990", "0990" or "9_90" as 990: each a second spelling of a signed amount."""
    if isinstance(value, str) and not _ASCII_DIGITS.fullmatch(value):
        raise ValueError("must be ASCII digits only")
    return value


# Received integers arrive as text: digits only, WeChat amounts are Int fen, at most 10 digits.
ReceivedInt = Annotated[int, BeforeValidator(_ascii_digits), Field(ge=0)]
ReceivedFen = Annotated[ReceivedInt, Field(le=MAX_FEN)]
# Ids are String(32) at WeChat (PROTOCOL.md §5); anything longer is not WeChat's.
ReceivedId = Annotated[str, Field(min_length=1, max_length=32)]
OutTradeNo = Annotated[str, Field(pattern=r"^[0-9A-Za-z_\-|*@]{1,32}$")]
OutRefundNo = Annotated[str, Field(pattern=r"^[0-9A-Za-z_\-|*@]{1,64}$")]
BeijingTime = Annotated[str, Field(pattern=r"^\d{14}$")]  # yyyyMMddHHmmss, UTC+8


class WireTradeState(StrEnum):
    """``trade_state`` of an order query (§6.1)."""

    SUCCESS = "SUCCESS"
    REFUND = "REFUND"
    NOTPAY = "NOTPAY"
    CLOSED = "CLOSED"
    REVOKED = "REVOKED"
    USERPAYING = "USERPAYING"
    PAYERROR = "PAYERROR"
    ACCEPT = "ACCEPT"


class WireRefundStatus(StrEnum):
    """``refund_status`` of a refund query or notify (§6.4, §6.5); the last two are legacy."""

    SUCCESS = "SUCCESS"
    REFUNDCLOSE = "REFUNDCLOSE"
    PROCESSING = "PROCESSING"
    CHANGE = "CHANGE"
    FAIL = "FAIL"
    NOTSURE = "NOTSURE"


# --- requests -------------------------------------------------------------------------------


class PayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_fields(self) -> dict[str, object]:
        """The business fields to sign and send: unset (``None``) fields left out."""
        return self.model_dump(mode="json", exclude_none=True)


class UnifiedOrderRequest(PayRequest):
    """``/pay/unifiedorder`` (§2.1). Re-sending the same ``out_trade_no`` needs identical fields."""

    body: Annotated[str, Field(min_length=1, max_length=127)]
    out_trade_no: OutTradeNo
    total_fee: PositiveFen
    spbill_create_ip: Annotated[str, Field(min_length=1, max_length=64)]
    notify_url: Annotated[str, Field(pattern=r"^https?://[^?#]+$", max_length=256)]
    trade_type: str = "JSAPI"
    openid: Annotated[str, Field(max_length=128)] | None = None
    device_info: str | None = None
    detail: str | None = None
    attach: Annotated[str, Field(max_length=127)] | None = None
    fee_type: str | None = None
    time_start: BeijingTime | None = None
    time_expire: BeijingTime | None = None
    goods_tag: str | None = None
    product_id: str | None = None
    limit_pay: str | None = None
    receipt: str | None = None
    profit_sharing: str | None = None
    scene_info: str | None = None

    @model_validator(mode="after")
    def _jsapi_needs_openid(self) -> Self:
        if self.trade_type == "JSAPI" and not self.openid:
            raise ValueError("trade_type=JSAPI requires the payer's openid")
        return self


class OrderQueryRequest(PayRequest):
    """``/pay/orderquery`` (§6.1): by ``transaction_id`` (preferred) or ``out_trade_no``."""

    transaction_id: str | None = None
    out_trade_no: OutTradeNo | None = None

    @model_validator(mode="after")
    def _needs_an_id(self) -> Self:
        if not (self.transaction_id or self.out_trade_no):
            raise ValueError("give transaction_id or out_trade_no")
        return self


class CloseOrderRequest(PayRequest):
    """``/pay/closeorder`` (§6.2); WeChat wants at least 5 minutes between order and close."""

    out_trade_no: OutTradeNo


class RefundRequest(PayRequest):
    """``/secapi/pay/refund`` (§6.3). The same ``out_refund_no`` refunds at most once."""

    transaction_id: str | None = None
    out_trade_no: OutTradeNo | None = None
    out_refund_no: OutRefundNo
    total_fee: PositiveFen
    refund_fee: PositiveFen
    refund_fee_type: str | None = None
    refund_desc: Annotated[str, Field(max_length=80)] | None = None
    refund_account: str | None = None
    notify_url: Annotated[str, Field(pattern=r"^https?://[^?#]+$", max_length=256)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not (self.transaction_id or self.out_trade_no):
            raise ValueError("give transaction_id or out_trade_no")
        if self.refund_fee > self.total_fee:
            raise ValueError("refund_fee cannot exceed total_fee")
        return self


class RefundQueryRequest(PayRequest):
    """``/pay/refundquery`` (§6.4): one id (WeChat uses the first present, in field order)."""

    refund_id: str | None = None
    out_refund_no: OutRefundNo | None = None
    transaction_id: str | None = None
    out_trade_no: OutTradeNo | None = None
    offset: Annotated[int, Field(strict=True, ge=0)] | None = None

    @model_validator(mode="after")
    def _needs_an_id(self) -> Self:
        if not (self.refund_id or self.out_refund_no or self.transaction_id or self.out_trade_no):
            raise ValueError("give refund_id, out_refund_no, transaction_id or out_trade_no")
        return self


# --- received messages ----------------------------------------------------------------------


class Received(BaseModel):
    """A message from WeChat: typed fields, text extras, and the raw dict it was built from."""

    model_config = ConfigDict(extra="allow", frozen=True)
    _raw: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Self:
        """Validate ``fields`` (empty values treated as absent) and keep them as ``raw``."""
        model = cls.model_validate({name: value for name, value in fields.items() if value != ""})
        model._raw = dict(fields)
        return model

    @property
    def raw(self) -> dict[str, str]:
        """Every field as received, ``sign`` included: what signatures are checked over."""
        return dict(self._raw)

    def extra_field(self, name: str) -> str | None:
        """An unmodelled field such as ``coupon_id_0``, or ``None``."""
        value: Any = (self.model_extra or {}).get(name)
        return value if isinstance(value, str) else None


class PayResponse(Received):
    """The envelope every v2 response shares (§2.1): check ``return_code``, then ``result_code``."""

    return_code: str
    return_msg: str | None = None
    appid: str | None = None
    mch_id: str | None = None
    device_info: str | None = None
    nonce_str: str | None = None
    sign: str | None = None
    result_code: str | None = None
    err_code: str | None = None
    err_code_des: str | None = None


class UnifiedOrderResponse(PayResponse):
    trade_type: str
    prepay_id: Annotated[str, Field(min_length=1, max_length=64)]  # valid for 2 hours
    code_url: str | None = None


class Coupon(BaseModel):
    """One ``coupon_*_$n`` group of a payment notify or order query (§5)."""

    model_config = ConfigDict(frozen=True)

    coupon_id: str
    coupon_fee: ReceivedFen
    coupon_type: str | None = None


class _PaidOrderFields(Received):
    """The payment fields a notify and an order query share (§5, §6.1)."""

    openid: str | None = None
    is_subscribe: str | None = None
    trade_type: str | None = None
    bank_type: Annotated[str, Field(max_length=32)] | None = None
    total_fee: ReceivedFen | None = None
    settlement_total_fee: ReceivedFen | None = None
    fee_type: str | None = None
    cash_fee: ReceivedFen | None = None
    cash_fee_type: str | None = None
    coupon_fee: ReceivedFen | None = None
    coupon_count: ReceivedInt | None = None
    transaction_id: ReceivedId | None = None
    out_trade_no: ReceivedId | None = None
    attach: str | None = None
    time_end: str | None = None

    @property
    def coupons(self) -> list[Coupon]:
        """The ``coupon_id_$n``/``coupon_fee_$n``/``coupon_type_$n`` groups, ``$n`` from 0."""
        return [
            Coupon(
                coupon_id=self.extra_field(f"coupon_id_{n}") or "",
                coupon_fee=int(self.extra_field(f"coupon_fee_{n}") or "0"),
                coupon_type=self.extra_field(f"coupon_type_{n}"),
            )
            for n in range(self.coupon_count or 0)
        ]

    @model_validator(mode="after")
    def _coupons_are_complete(self) -> Self:
        for n in range(self.coupon_count or 0):
            fee = self.extra_field(f"coupon_fee_{n}")
            if (
                not self.extra_field(f"coupon_id_{n}")
                or fee is None
                or not _ASCII_DIGITS.fullmatch(fee)
            ):
                raise ValueError(f"coupon {n} of {self.coupon_count} is incomplete")
        return self


class OrderQueryResponse(PayResponse, _PaidOrderFields):
    """``/pay/orderquery``: only ``trade_state=SUCCESS`` means paid (§6.1, §9.5)."""

    trade_state: WireTradeState
    trade_state_desc: str | None = None

    @model_validator(mode="after")
    def _paid_orders_carry_payment(self) -> Self:
        if self.trade_state is WireTradeState.SUCCESS and (
            self.transaction_id is None or self.total_fee is None
        ):
            raise ValueError("a SUCCESS order query must carry transaction_id and total_fee")
        return self


class CloseOrderResponse(PayResponse):
    result_msg: str | None = None


class RefundResponse(PayResponse):
    """``result_code=SUCCESS`` means the refund was accepted, not that it has completed (§6.3)."""

    transaction_id: str
    out_trade_no: str
    out_refund_no: str
    refund_id: str
    refund_fee: ReceivedFen
    settlement_refund_fee: ReceivedFen | None = None
    total_fee: ReceivedFen
    settlement_total_fee: ReceivedFen | None = None
    fee_type: str | None = None
    cash_fee: ReceivedFen | None = None
    cash_fee_type: str | None = None
    cash_refund_fee: ReceivedFen | None = None
    coupon_refund_fee: ReceivedFen | None = None
    coupon_refund_count: ReceivedInt | None = None


class QueriedRefund(BaseModel):
    """One ``_$n`` group of a refund query (§6.4)."""

    model_config = ConfigDict(frozen=True)

    out_refund_no: str
    refund_id: str
    refund_fee: ReceivedFen
    refund_status: WireRefundStatus
    refund_channel: str | None = None
    settlement_refund_fee: ReceivedFen | None = None
    refund_account: str | None = None
    refund_recv_accout: str | None = None  # sic: WeChat's spelling
    refund_success_time: str | None = None


_QUERIED_REFUND_FIELDS = tuple(QueriedRefund.model_fields)


class RefundQueryResponse(PayResponse):
    transaction_id: str
    out_trade_no: str
    total_fee: ReceivedFen
    settlement_total_fee: ReceivedFen | None = None
    fee_type: str | None = None
    cash_fee: ReceivedFen | None = None
    refund_count: ReceivedInt
    total_refund_count: ReceivedInt | None = None
    refunds: list[QueriedRefund] = Field(default_factory=list, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _collect_refunds(cls, data: Any) -> Any:
        # The $n groups are flat fields (refund_fee_0, refund_status_0, ...); gather them.
        if not isinstance(data, dict):
            return data
        count = data.get("refund_count", "0")
        if not isinstance(count, str) or not _ASCII_DIGITS.fullmatch(count):
            return data  # the refund_count check reports it
        refunds = [_refund_group(data, n) for n in range(int(count))]
        return {**data, "refunds": refunds}


def _refund_group(data: Mapping[str, Any], n: int) -> dict[str, Any]:
    return {name: data[f"{name}_{n}"] for name in _QUERIED_REFUND_FIELDS if f"{name}_{n}" in data}


class PaymentNotify(PayResponse, _PaidOrderFields):
    """The payment result notify (§5); paid only when return_code and result_code are SUCCESS."""

    sign_type: str | None = None

    @property
    def is_paid(self) -> bool:
        return self.return_code == "SUCCESS" and self.result_code == "SUCCESS"

    @model_validator(mode="after")
    def _paid_notifies_carry_payment(self) -> Self:
        if self.is_paid and (
            self.transaction_id is None or self.total_fee is None or self.out_trade_no is None
        ):
            raise ValueError("a paid notify must carry transaction_id, out_trade_no, total_fee")
        return self


class RefundNotify(Received):
    """The outer refund notify (§6.5): no ``sign``; ``req_info`` carries the encrypted result."""

    return_code: str
    return_msg: str | None = None
    appid: str | None = None
    mch_id: str | None = None
    nonce_str: str | None = None
    req_info: str | None = None


class RefundNotifyInfo(Received):
    """The decrypted ``req_info`` of a refund notify (§6.5, root ``<root>``)."""

    transaction_id: str
    out_trade_no: str
    refund_id: str
    out_refund_no: str
    total_fee: ReceivedFen
    settlement_total_fee: ReceivedFen | None = None
    refund_fee: ReceivedFen
    settlement_refund_fee: ReceivedFen | None = None
    refund_status: WireRefundStatus
    success_time: str | None = None  # yyyy-MM-dd HH:mm:ss, Beijing time
    refund_recv_accout: str | None = None  # sic
    refund_account: str | None = None
    refund_request_source: str | None = None
