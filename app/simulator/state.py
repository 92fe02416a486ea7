"""Everything the simulator remembers, in memory, for one merchant and its users."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum

from app.wechat.signing import SignType


class SimTradeState(StrEnum):
    NOTPAY = "NOTPAY"
    SUCCESS = "SUCCESS"
    CLOSED = "CLOSED"
    PAYERROR = "PAYERROR"
    REFUND = "REFUND"


class SimRefundStatus(StrEnum):
    """v3's names; v2 reports ABNORMAL as CHANGE and CLOSED as REFUNDCLOSE (``v2_name``)."""

    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    ABNORMAL = "ABNORMAL"
    CLOSED = "CLOSED"

    @property
    def v2_name(self) -> str:
        return {"ABNORMAL": "CHANGE", "CLOSED": "REFUNDCLOSE"}.get(self.value, self.value)


class SimApiVersion(StrEnum):
    """The Pay API an order or refund was made through: its notify speaks the same version."""

    V2 = "v2"
    V3 = "v3"


@dataclass(slots=True)
class LoginCode:
    code: str
    openid: str
    issued_at: datetime
    used: bool = False


@dataclass(slots=True)
class SimOrder:
    out_trade_no: str
    appid: str
    openid: str
    total_fee: int
    notify_url: str
    sign_type: SignType  # v2: the notify is signed the same way; unused for v3 orders
    # The business parameters of the first unified order; re-entry must repeat them exactly.
    params: dict[str, str]
    prepay_id: str  # the latest; earlier ones stay payable until their own 2 hours pass
    created_at: datetime
    prepays: dict[str, datetime] = field(default_factory=dict)  # prepay_id -> issued at
    time_expire: datetime | None = None
    state: SimTradeState = SimTradeState.NOTPAY
    transaction_id: str | None = None
    time_end: datetime | None = None
    refunded_fee: int = 0
    refund_nos: list[str] = field(default_factory=list)
    api_version: SimApiVersion = SimApiVersion.V2

    @property
    def description(self) -> str:
        """What the user sees on the bill: v2's ``body``, v3's ``description``."""
        return self.params.get("body") or self.params.get("description") or ""

    @property
    def attach(self) -> str | None:
        return self.params.get("attach") or None

    @property
    def is_paid(self) -> bool:
        return self.state in (SimTradeState.SUCCESS, SimTradeState.REFUND)


@dataclass(slots=True)
class SimRefund:
    out_refund_no: str
    refund_id: str
    out_trade_no: str
    refund_fee: int
    notify_url: str | None
    sign_type: SignType
    refund_account: str
    created_at: datetime
    status: SimRefundStatus = SimRefundStatus.PROCESSING
    success_time: datetime | None = None
    api_version: SimApiVersion = SimApiVersion.V2
    reason: str | None = None


@dataclass(slots=True)
class DeliveryAttempt:
    """One POST of a notify, with what came back and whether WeChat would count it delivered."""

    id: int
    kind: str  # "payment" or "refund"
    api_version: str
    out_trade_no: str
    out_refund_no: str | None
    attempt: int
    copy: int
    url: str
    sent_at: datetime
    body: str
    faults: list[str]
    headers: dict[str, str] = field(default_factory=dict)  # v3: the Wechatpay-* signature
    status: int | None = None
    reply: str = ""
    verdict: str = "pending"
    elapsed_ms: float = 0.0

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["sent_at"] = self.sent_at.isoformat()
        return data


@dataclass(slots=True)
class SimState:
    codes: dict[str, LoginCode] = field(default_factory=dict)
    session_keys: dict[str, str] = field(default_factory=dict)  # openid -> current session_key
    orders: dict[str, SimOrder] = field(default_factory=dict)
    prepay_index: dict[str, str] = field(default_factory=dict)  # prepay_id -> out_trade_no
    transaction_index: dict[str, str] = field(default_factory=dict)
    refunds: dict[str, SimRefund] = field(default_factory=dict)
    refund_index: dict[str, str] = field(default_factory=dict)  # refund_id -> out_refund_no
    deliveries: list[DeliveryAttempt] = field(default_factory=list)

    def clear(self) -> None:
        for collection in (
            self.codes,
            self.session_keys,
            self.orders,
            self.prepay_index,
            self.transaction_index,
            self.refunds,
            self.refund_index,
            self.deliveries,
        ):
            collection.clear()

    def knows_user(self, openid: str) -> bool:
        return openid in self.session_keys

    def order_by_transaction(self, transaction_id: str) -> SimOrder | None:
        out_trade_no = self.transaction_index.get(transaction_id)
        return self.orders.get(out_trade_no) if out_trade_no else None

    def order_by_prepay(self, prepay_id: str) -> SimOrder | None:
        out_trade_no = self.prepay_index.get(prepay_id)
        return self.orders.get(out_trade_no) if out_trade_no else None

    def refunds_of(self, order: SimOrder) -> list[SimRefund]:
        return [self.refunds[no] for no in order.refund_nos]
