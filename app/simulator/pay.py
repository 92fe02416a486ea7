"""Unified order, order query, close order, and the user paying (PROTOCOL.md §2, §6.1, §6.2)."""

from __future__ import annotations

from datetime import datetime, timedelta

from app.simulator.clock import SimClock, parse_beijing_stamp
from app.simulator.config import SimulatorConfig
from app.simulator.envelope import BusinessFail, ProtocolFail, SignedRequest
from app.simulator.ids import new_prepay_id, new_transaction_id
from app.simulator.notify import Notifier
from app.simulator.state import SimOrder, SimState, SimTradeState
from app.simulator.validation import (
    UNIFIED_ORDER_RULES,
    check_formats,
    require,
    require_one_of,
)
from app.wechat.timefmt import to_wechat_time as beijing_stamp

PREPAY_ID_LIFETIME = timedelta(hours=2)
MIN_TIME_EXPIRE = timedelta(minutes=5)
# Request fields that are not business parameters: they may differ on an identical re-entry.
_ENVELOPE_FIELDS = frozenset({"nonce_str", "sign"})
_PAYABLE = (SimTradeState.NOTPAY, SimTradeState.PAYERROR)
TRADE_STATE_DESC = {
    SimTradeState.NOTPAY: "订单未支付",
    SimTradeState.SUCCESS: "支付成功",
    SimTradeState.CLOSED: "订单已关闭",
    SimTradeState.PAYERROR: "支付失败，请重新下单支付",
    SimTradeState.REFUND: "订单发生过退款",
}


class ControlError(Exception):
    """A control-API request that cannot be honoured; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PayDesk:
    def __init__(
        self, config: SimulatorConfig, state: SimState, clock: SimClock, notifier: Notifier
    ) -> None:
        self._config = config
        self._state = state
        self._clock = clock
        self._notifier = notifier

    def unified_order(self, request: SignedRequest) -> dict[str, object]:
        """Place a JSAPI order, or re-enter one.

        Rules: re-entry with identical business parameters returns the same ``prepay_id``
        (a fresh one once it is 2 hours old); a paid order is ``ORDERPAID``, a closed one
        ``ORDERCLOSED``; another payer or trade type is ``OUT_TRADE_NO_USED``; any other
        change is ``INVALID_REQUEST`` ("201 商户订单号重复").
        """
        fields = request.fields
        require(fields, ("body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url"))
        require(fields, ("trade_type",))
        check_formats(fields, UNIFIED_ORDER_RULES)
        self._check_order_rules(request)
        existing = self._state.orders.get(fields["out_trade_no"])
        order = self._reenter(existing, request) if existing else self._place(request)
        return {"trade_type": fields["trade_type"], "prepay_id": order.prepay_id}

    def _check_order_rules(self, request: SignedRequest) -> None:
        fields = request.fields
        if fields["trade_type"] != "JSAPI":
            raise BusinessFail("NOAUTH", "商户无此接口权限")  # a mini-program-only merchant
        require(fields, ("openid",))
        if not self._state.knows_user(fields["openid"]):
            raise ProtocolFail("appid和openid不匹配")
        if fields.get("fee_type", "CNY") != "CNY":
            raise BusinessFail("INVALID_REQUEST", "不支持的币种")
        expire = parse_beijing_stamp(fields.get("time_expire", ""))
        if expire is not None and expire - self._clock.now() < MIN_TIME_EXPIRE:
            raise BusinessFail("INVALID_REQUEST", "time_expire时间过短，刷卡至少1分钟，其他5分钟")

    def _place(self, request: SignedRequest) -> SimOrder:
        now = self._clock.now()
        fields = request.fields
        order = SimOrder(
            out_trade_no=fields["out_trade_no"],
            appid=fields["appid"],
            openid=fields["openid"],
            total_fee=int(fields["total_fee"]),
            notify_url=fields["notify_url"],
            sign_type=request.sign_type,
            params=_business_params(request),
            prepay_id="",
            created_at=now,
            time_expire=parse_beijing_stamp(fields.get("time_expire", "")),
        )
        self._state.orders[order.out_trade_no] = order
        self.issue_prepay(order, now)
        return order

    def _reenter(self, order: SimOrder, request: SignedRequest) -> SimOrder:
        if order.is_paid:
            raise BusinessFail("ORDERPAID", "该订单已支付")
        if order.state is SimTradeState.CLOSED:
            raise BusinessFail("ORDERCLOSED", "该订单已关")
        params = _business_params(request)
        if params != order.params:
            names = params.keys() | order.params.keys()
            changed = {n for n in names if params.get(n) != order.params.get(n)}
            if changed & {"openid", "trade_type"}:
                raise BusinessFail("OUT_TRADE_NO_USED", "商户订单号重复")
            raise BusinessFail("INVALID_REQUEST", "201 商户订单号重复")
        now = self._clock.now()
        if now - order.prepays[order.prepay_id] >= PREPAY_ID_LIFETIME:
            self.issue_prepay(order, now)
        return order

    def issue_prepay(self, order: SimOrder, now: datetime) -> None:
        order.prepay_id = new_prepay_id(now)
        order.prepays[order.prepay_id] = now
        self._state.prepay_index[order.prepay_id] = order.out_trade_no

    def find_order(self, request: SignedRequest) -> SimOrder:
        """The order named by ``transaction_id`` (preferred) or ``out_trade_no``."""
        transaction_id = request.get("transaction_id")
        if transaction_id:
            order = self._state.order_by_transaction(transaction_id)
        else:
            order = self._state.orders.get(request.fields.get("out_trade_no", ""))
        if order is None:
            raise BusinessFail("ORDERNOTEXIST", "订单不存在")
        return order

    def order_query(self, request: SignedRequest) -> dict[str, object]:
        """The order's ``trade_state``; an unpaid order past ``time_expire`` stays NOTPAY."""
        require_one_of(request.fields, ("transaction_id", "out_trade_no"))
        check_formats(request.fields, {})
        order = self.find_order(request)
        return order_fields(order)

    def close_order(self, request: SignedRequest) -> dict[str, object]:
        """Close an unpaid order; a paid one is ``ORDERPAID``, a closed one ``ORDERCLOSED``.

        WeChat asks merchants to wait 5 minutes after ordering before closing; it cannot be
        observed reliably as an error, so it is not enforced here.
        """
        require(request.fields, ("out_trade_no",))
        check_formats(request.fields, {})
        order = self._state.orders.get(request.fields["out_trade_no"])
        if order is None:
            raise BusinessFail("ORDERNOTEXIST", "订单不存在")
        if order.is_paid:
            raise BusinessFail("ORDERPAID", "订单已支付，不能发起关单")
        if order.state is SimTradeState.CLOSED:
            raise BusinessFail("ORDERCLOSED", "订单已关闭，无法重复关闭")
        order.state = SimTradeState.CLOSED
        return {"result_msg": "OK"}

    def pay(self, prepay_id: str, result: str) -> SimOrder:
        """The user confirming (``SUCCESS``), failing (``FAIL``) or cancelling in
        ``wx.requestPayment``. Only an unexpired prepay id of an unpaid, unclosed order
        whose ``time_expire`` has not passed can be paid; success sends the notify."""
        order = self._payable_order(prepay_id)
        if result == "SUCCESS":
            now = self._clock.now()
            order.state = SimTradeState.SUCCESS
            order.transaction_id = new_transaction_id(now)
            order.time_end = now
            self._state.transaction_index[order.transaction_id] = order.out_trade_no
            self._notifier.deliver_payment(order)
        elif result == "FAIL":
            order.state = SimTradeState.PAYERROR
        return order

    def _payable_order(self, prepay_id: str) -> SimOrder:
        order = self._state.order_by_prepay(prepay_id)
        if order is None:
            raise ControlError(404, "unknown prepay_id")
        now = self._clock.now()
        if now - order.prepays[prepay_id] >= PREPAY_ID_LIFETIME:
            raise ControlError(409, "prepay_id has expired (valid for 2 hours)")
        if order.time_expire is not None and now >= order.time_expire:
            raise ControlError(409, "the order has passed its time_expire")
        if order.state not in _PAYABLE:
            raise ControlError(409, f"the order is {order.state.value}, not payable")
        return order


def _business_params(request: SignedRequest) -> dict[str, str]:
    params = {k: v for k, v in request.fields.items() if k not in _ENVELOPE_FIELDS and v}
    params["sign_type"] = request.sign_type.value  # MD5 whether declared or implied
    return params


def order_fields(order: SimOrder) -> dict[str, object]:
    """The orderquery answer's business fields: payer and payment details once paid."""
    fields: dict[str, object] = {
        "device_info": order.params.get("device_info"),
        "out_trade_no": order.out_trade_no,
        "trade_type": "JSAPI",
        "trade_state": order.state.value,
        "trade_state_desc": TRADE_STATE_DESC[order.state],
        "total_fee": order.total_fee,
        "fee_type": "CNY",
        "attach": order.attach,
    }
    if order.is_paid and order.time_end is not None:
        fields |= {
            "openid": order.openid,
            "is_subscribe": "N",
            "bank_type": "OTHERS",
            "cash_fee": order.total_fee,
            "transaction_id": order.transaction_id,
            "time_end": beijing_stamp(order.time_end),
        }
    return fields
