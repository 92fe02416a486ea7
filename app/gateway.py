"""The payment-gateway port: what the services ask of WeChat Pay, in our own terms.

Services, the sweep and the routes talk to a ``PaymentGateway`` and get our types back; WeChat
Pay API v2 (``app.adapters.wechatpay_v2``) is an adapter behind it, and v3 plugs in the same way.
An order remembers which API version it was created with, and every later call about it (query,
close, refund) goes to that version's gateway.

Failures keep the split made once at the protocol edge (``app.wechat.errors``):
``WeChatUnavailable`` means the outcome is unknown or WeChat asked for later, ``WeChatRejected``
is WeChat's final refusal; an incoming notify that must not be acted on raises
``InvalidNotification``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from fastapi import Response

from app.orders.states import OrderStatus
from app.refunds.states import RefundStatus
from app.wechat.errors import InvalidNotification, RefusalKind, WeChatRejected, WeChatUnavailable
from app.wechat.models import MAX_FEN  # the largest amount WeChat Pay takes, in fen
from app.wechat.xmlcodec import DEFAULT_MAX_BYTES as MAX_NOTIFY_BYTES
from app.wechat.xmlcodec import xml_can_carry as wechat_can_carry  # text WeChat can be sent

__all__ = [
    "MAX_FEN",
    "MAX_NOTIFY_BYTES",
    "ApiVersion",
    "CloseOutcome",
    "Gateways",
    "InvalidNotification",
    "PaymentGateway",
    "PaymentNotice",
    "PaymentResult",
    "PrepayOrder",
    "RefundNotice",
    "RefundOrder",
    "RefundOutcome",
    "RefundReport",
    "RefusalKind",
    "TradeReport",
    "WeChatRejected",
    "WeChatUnavailable",
    "order_status_of",
    "wechat_can_carry",
]


class ApiVersion(StrEnum):
    V2 = "v2"
    V3 = "v3"


@dataclass(frozen=True, slots=True)
class PrepayOrder:
    """A stored order as WeChat must see it; built only from stored fields, so a re-entry
    sends identical parameters (WeChat refuses a changed one)."""

    out_trade_no: str
    description: str
    total_fee: int
    openid: str
    client_ip: str
    time_expire: dt.datetime
    attach: str


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """What WeChat reports about a successful payment."""

    out_trade_no: str
    transaction_id: str
    total_fee: int
    cash_fee: int | None
    bank_type: str | None
    paid_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class TradeReport:
    """WeChat's answer to an order query: our status for its trade state (None for states
    that decide nothing for a JSAPI order), and the payment when it is paid."""

    status: OrderStatus | None
    payment: PaymentResult | None


def order_status_of(trade_state: str) -> OrderStatus | None:
    """WeChat's ``trade_state`` (the same names in v2 and v3, PROTOCOL.md §6.1, §8.5) as our
    status; None for USERPAYING, REVOKED and ACCEPT, which do not occur for a JSAPI order and
    change nothing here."""
    try:
        return OrderStatus(trade_state)
    except ValueError:
        return None


class CloseOutcome(StrEnum):
    CLOSED = "CLOSED"  # closed now, or already closed, or never seen: nobody can pay it
    PAID = "PAID"  # the user paid first: query and record the payment


@dataclass(frozen=True, slots=True)
class RefundOrder:
    out_trade_no: str
    out_refund_no: str
    total_fee: int
    refund_fee: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """What WeChat says about one refund, in our refund statuses."""

    status: RefundStatus
    refund_id: str | None = None
    success_time: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class RefundReport:
    """WeChat has the refund; ``outcome`` is None while its status decides nothing (v2's
    legacy ``FAIL``/``NOTSURE``: ask again later)."""

    outcome: RefundOutcome | None


@dataclass(frozen=True, slots=True)
class PaymentNotice:
    """A verified payment notify: ``payment`` when the user paid, else why the attempt failed.
    ``audit`` is what may be stored of it (no secrets)."""

    out_trade_no: str | None
    payment: PaymentResult | None
    failure: str
    audit: str


@dataclass(frozen=True, slots=True)
class RefundNotice:
    """A verified refund notify. ``outcome`` is None for a status that decides nothing (v2's
    legacy ``FAIL``/``NOTSURE``); ``audit`` leaves out where the money went."""

    out_refund_no: str
    out_trade_no: str
    transaction_id: str
    refund_id: str
    total_fee: int
    refund_fee: int
    outcome: RefundOutcome | None
    reported_status: str
    audit: str


class PaymentGateway(Protocol):
    """WeChat Pay, as the services use it."""

    @property
    def version(self) -> ApiVersion: ...

    @property
    def sign_type(self) -> str:
        """How this gateway's pay params are signed (stored on each order)."""
        ...

    async def prepay(self, order: PrepayOrder) -> str:
        """The ``prepay_id`` for an order (valid two hours)."""
        ...

    def pay_params(self, prepay_id: str) -> dict[str, str]:
        """Exactly what ``wx.requestPayment`` takes."""
        ...

    async def query(self, out_trade_no: str) -> TradeReport | None:
        """The order at WeChat; None if WeChat has never seen it."""
        ...

    async def close(self, out_trade_no: str) -> CloseOutcome: ...

    async def refund(self, refund: RefundOrder) -> str:
        """Ask for a refund; WeChat's refund id once it has accepted it. Sending the same
        ``out_refund_no`` again is safe: WeChat refunds it at most once."""
        ...

    async def refund_query(self, out_refund_no: str) -> RefundReport | None:
        """What WeChat knows of a refund; None if WeChat has never seen it."""
        ...

    async def parse_payment_notify(self, body: bytes, headers: Mapping[str, str]) -> PaymentNotice:
        """Verify the raw bytes before reading them; ``InvalidNotification`` if not WeChat's
        message about a payment of ours. Async: checking v3's signature may first need
        WeChat's new platform certificate."""
        ...

    async def parse_refund_notify(
        self, body: bytes, headers: Mapping[str, str]
    ) -> RefundNotice: ...

    def notify_reply(self, acknowledged: bool, message: str, status: int) -> Response:
        """The answer WeChat expects to a notify (v2: XML)."""
        ...


class Gateways:
    """One gateway per API version; new orders use the configured one."""

    def __init__(self, current: PaymentGateway, *others: PaymentGateway) -> None:
        self.current = current
        self._by_version = {gateway.version: gateway for gateway in (current, *others)}

    def configured(self, version: ApiVersion) -> PaymentGateway | None:
        """The gateway for ``version``, or None when that version is not configured here."""
        return self._by_version.get(version)

    def of(self, version: str) -> PaymentGateway:
        """The gateway for an order created with ``version``."""
        try:
            return self._by_version[ApiVersion(version)]
        except (KeyError, ValueError):
            raise WeChatUnavailable(f"WeChat Pay {version} is not configured") from None
