"""v3 refund and refund query (PROTOCOL.md §8.7), on the same refunds as v2.

A v3 refund is accepted as ``PROCESSING``, settles after ``refund_settle_seconds`` (scaled) and
then sends a ``REFUND.SUCCESS`` notify to its ``notify_url``, if it had one.
"""

from __future__ import annotations

from typing import Any

from app.simulator.clock import SimClock
from app.simulator.config import SimulatorConfig
from app.simulator.ids import new_refund_id
from app.simulator.refunds import MAX_REFUNDS_PER_ORDER, RefundDesk
from app.simulator.state import SimApiVersion, SimOrder, SimRefund, SimState
from app.simulator.v3envelope import V3Error
from app.simulator.v3fields import (
    V3_OUT_REFUND_NO,
    V3_OUT_TRADE_NO,
    V3Call,
    amount,
    currency,
    notify_url_field,
    param_error,
    required_text,
    sub_object,
    text,
)
from app.simulator.v3messages import refund_resource
from app.wechat.signing import SignType

_AMOUNTS_CHANGED = "订单金额或退款金额与之前请求不一致，请核实后再试"


class V3RefundDesk:
    def __init__(
        self, config: SimulatorConfig, state: SimState, clock: SimClock, refunds: RefundDesk
    ) -> None:
        self._config = config
        self._state = state
        self._clock = clock
        self._refunds = refunds

    def refund(self, call: V3Call) -> dict[str, Any]:
        """Accept a refund (``status`` PROCESSING).

        Rules: a paid order, named by ``transaction_id`` or ``out_trade_no``
        (``404 RESOURCE_NOT_EXISTS``); ``amount.total`` is the order's and refunds together
        never exceed it, at most 50 of them (``400 INVALID_REQUEST``); the same
        ``out_refund_no`` with the same amount returns the same refund.
        """
        body, where = call.body, "/body"
        out_refund_no = required_text(
            body, where, "out_refund_no", max_length=64, pattern=V3_OUT_REFUND_NO
        )
        money = sub_object(body, where, "amount")
        refund_fee, total = (
            amount(money, where + "/amount", "refund"),
            amount(money, where + "/amount", "total"),
        )
        currency(money, where + "/amount")
        order = self._paid_order(body, total)
        existing = self._state.refunds.get(out_refund_no)
        if existing is not None:
            if existing.out_trade_no != order.out_trade_no or existing.refund_fee != refund_fee:
                raise V3Error(400, "INVALID_REQUEST", _AMOUNTS_CHANGED)
            return refund_resource(order, existing)
        return refund_resource(order, self._create(order, body, out_refund_no, refund_fee))

    def _paid_order(self, body: dict[str, Any], total: int) -> SimOrder:
        transaction_id = text(body, "/body", "transaction_id", max_length=32, required=False)
        out_trade_no = text(
            body, "/body", "out_trade_no", max_length=32, required=False, pattern=V3_OUT_TRADE_NO
        )
        if transaction_id:
            order = self._state.order_by_transaction(transaction_id)
        elif out_trade_no:
            order = self._state.orders.get(out_trade_no)
        else:
            raise param_error("transaction_id和out_trade_no必须二选一进行传参")
        if order is None or not order.is_paid:
            raise V3Error(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        if total != order.total_fee:
            raise V3Error(400, "INVALID_REQUEST", _AMOUNTS_CHANGED)
        return order

    def _create(
        self, order: SimOrder, body: dict[str, Any], out_refund_no: str, refund_fee: int
    ) -> SimRefund:
        if order.refunded_fee + refund_fee > order.total_fee:
            raise V3Error(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
        if len(order.refund_nos) >= MAX_REFUNDS_PER_ORDER:
            raise V3Error(400, "INVALID_REQUEST", "退款次数超过限制")
        now = self._clock.now()
        refund = SimRefund(
            out_refund_no=out_refund_no,
            refund_id=new_refund_id(now),
            out_trade_no=order.out_trade_no,
            refund_fee=refund_fee,
            notify_url=notify_url_field(body, "/body", required=False),
            sign_type=SignType.MD5,  # not used: a v3 refund's notify is RSA-signed
            refund_account="REFUND_SOURCE_UNSETTLED_FUNDS",
            created_at=now,
            api_version=SimApiVersion.V3,
            reason=text(body, "/body", "reason", max_length=80, required=False),
        )
        self._refunds.start(order, refund)
        return refund

    def query(self, call: V3Call) -> dict[str, Any]:
        """The refund by ``out_refund_no``; ``404 RESOURCE_NOT_EXISTS`` if unknown."""
        refund = self._state.refunds.get(call.path_id)
        if refund is None:
            raise V3Error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return refund_resource(self._state.orders[refund.out_trade_no], refund)
