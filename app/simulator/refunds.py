"""Refund and refund query (PROTOCOL.md §6.3, §6.4); settlement sends the refund notify.

The refund endpoint needs the merchant's client certificate at WeChat; the simulator speaks
plain HTTP on loopback and cannot check it.
"""

from __future__ import annotations

import asyncio

from app.simulator.clock import SimClock
from app.simulator.config import SimulatorConfig
from app.simulator.envelope import BusinessFail, SignedRequest
from app.simulator.faults import FaultBook, FaultName
from app.simulator.ids import new_refund_id
from app.simulator.notify import Notifier
from app.simulator.pay import PayDesk
from app.simulator.state import SimOrder, SimRefund, SimRefundStatus, SimState, SimTradeState
from app.simulator.validation import REFUND_RULES, check_formats, require, require_one_of
from app.wechat.timefmt import to_refund_time as refund_time

MAX_REFUNDS_PER_ORDER = 50
REFUND_QUERY_PAGE = 10
_AMOUNTS_CHANGED = "订单金额或退款金额与之前请求不一致，请核实后再试"


class RefundDesk:
    def __init__(
        self,
        config: SimulatorConfig,
        state: SimState,
        clock: SimClock,
        notifier: Notifier,
        pay: PayDesk,
        faults: FaultBook,
    ) -> None:
        self._config = config
        self._faults = faults
        self._state = state
        self._clock = clock
        self._notifier = notifier
        self._pay = pay

    def refund(self, request: SignedRequest) -> dict[str, object]:
        """Accept a refund (``refund_status`` PROCESSING, SUCCESS after settlement).

        Rules: only a paid order; ``total_fee`` must be the order's; refunds together never
        exceed it; at most 50 per order; the same ``out_refund_no`` with the same amounts
        returns the same refund, with other amounts ``PARAM_ERROR``.
        """
        fields = request.fields
        require_one_of(fields, ("transaction_id", "out_trade_no"))
        require(fields, ("out_refund_no", "total_fee", "refund_fee"))
        check_formats(fields, REFUND_RULES)
        order = self._paid_order(request)
        refund = self._state.refunds.get(fields["out_refund_no"])
        if refund is not None:
            self._check_same_refund(refund, order, request)
        else:
            refund = self._create(order, request)
        return refund_fields(order, refund)

    def _paid_order(self, request: SignedRequest) -> SimOrder:
        order = self._pay.find_order(request)
        if not order.is_paid:
            raise BusinessFail("ORDERNOTEXIST", "订单未支付")
        if int(request.fields["total_fee"]) != order.total_fee:
            raise BusinessFail("PARAM_ERROR", _AMOUNTS_CHANGED)
        return order

    def _check_same_refund(
        self, refund: SimRefund, order: SimOrder, request: SignedRequest
    ) -> None:
        same_order = refund.out_trade_no == order.out_trade_no
        if not same_order or refund.refund_fee != int(request.fields["refund_fee"]):
            raise BusinessFail("PARAM_ERROR", _AMOUNTS_CHANGED)

    def _create(self, order: SimOrder, request: SignedRequest) -> SimRefund:
        refund_fee = int(request.fields["refund_fee"])
        if order.refunded_fee + refund_fee > order.total_fee:
            raise BusinessFail("ERROR", "累计退款金额大于支付金额")
        if len(order.refund_nos) >= MAX_REFUNDS_PER_ORDER:
            raise BusinessFail("ERROR", "退款次数超过限制")
        now = self._clock.now()
        refund = SimRefund(
            out_refund_no=request.fields["out_refund_no"],
            refund_id=new_refund_id(now),
            out_trade_no=order.out_trade_no,
            refund_fee=refund_fee,
            notify_url=request.get("notify_url"),
            sign_type=request.sign_type,
            refund_account=request.get("refund_account") or "REFUND_SOURCE_UNSETTLED_FUNDS",
            created_at=now,
        )
        self.start(order, refund)
        return refund

    def start(self, order: SimOrder, refund: SimRefund) -> None:
        """Record an accepted refund (v2 or v3) and settle it in the background."""
        self._record(order, refund)
        self._notifier.spawn(self._settle(order, refund))

    def _record(self, order: SimOrder, refund: SimRefund) -> None:
        self._state.refunds[refund.out_refund_no] = refund
        self._state.refund_index[refund.refund_id] = refund.out_refund_no
        order.refund_nos.append(refund.out_refund_no)
        order.refunded_fee += refund.refund_fee
        order.state = SimTradeState.REFUND

    async def _settle(self, order: SimOrder, refund: SimRefund) -> None:
        await asyncio.sleep(self._config.scaled(self._config.refund_settle_seconds))
        refund.status = self._outcome(order)
        if refund.status is SimRefundStatus.SUCCESS:
            refund.success_time = self._clock.now()
        elif refund.status is SimRefundStatus.CLOSED:
            order.refunded_fee -= refund.refund_fee  # the money never left: refundable again
        if refund.notify_url:
            self._notifier.deliver_refund(order, refund)

    def _outcome(self, order: SimOrder) -> SimRefundStatus:
        key = order.out_trade_no
        if self._faults.take(FaultName.REFUND_ABNORMAL, out_trade_no=key):
            return SimRefundStatus.ABNORMAL
        if self._faults.take(FaultName.REFUND_CLOSED, out_trade_no=key):
            return SimRefundStatus.CLOSED
        return SimRefundStatus.SUCCESS

    def refund_query(self, request: SignedRequest) -> dict[str, object]:
        """Refunds by ``refund_id``, ``out_refund_no``, ``transaction_id`` or ``out_trade_no``
        (that priority), 10 at a time from ``offset``; none is ``REFUNDNOTEXIST``."""
        keys = ("refund_id", "out_refund_no", "transaction_id", "out_trade_no")
        require_one_of(request.fields, keys)
        check_formats(request.fields, REFUND_RULES)
        order, refunds = self._find_refunds(request)
        offset = int(request.get("offset") or 0)
        page = refunds[offset : offset + REFUND_QUERY_PAGE]
        if not page:
            raise BusinessFail("REFUNDNOTEXIST", "not exist")
        return refund_query_fields(order, page, total=len(refunds))

    def _find_refunds(self, request: SignedRequest) -> tuple[SimOrder, list[SimRefund]]:
        out_refund_no = request.get("out_refund_no")
        refund_id = request.get("refund_id")
        if refund_id:
            out_refund_no = self._state.refund_index.get(refund_id, "")
        if refund_id or out_refund_no:
            refund = self._state.refunds.get(out_refund_no or "")
            if refund is None:
                raise BusinessFail("REFUNDNOTEXIST", "not exist")
            return self._state.orders[refund.out_trade_no], [refund]
        try:
            order = self._pay.find_order(request)
        except BusinessFail as missing:
            raise BusinessFail("REFUNDNOTEXIST", "not exist") from missing
        return order, self._state.refunds_of(order)


def refund_fields(order: SimOrder, refund: SimRefund) -> dict[str, object]:
    return {
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "out_refund_no": refund.out_refund_no,
        "refund_id": refund.refund_id,
        "refund_fee": refund.refund_fee,
        "total_fee": order.total_fee,
        "cash_fee": order.total_fee,
        "cash_refund_fee": refund.refund_fee,
        "coupon_refund_fee": 0,
        "coupon_refund_count": 0,
    }


def refund_query_fields(
    order: SimOrder, refunds: list[SimRefund], *, total: int
) -> dict[str, object]:
    fields: dict[str, object] = {
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "total_fee": order.total_fee,
        "fee_type": "CNY",
        "cash_fee": order.total_fee,
        "total_refund_count": total,
        "refund_count": len(refunds),
    }
    # Numbered from 0 on every page, as SDKs iterate 0 .. refund_count - 1.
    for n, refund in enumerate(refunds):
        fields |= _numbered_refund(n, refund)
    return fields


def _numbered_refund(n: int, refund: SimRefund) -> dict[str, object]:
    success_time = refund.success_time
    return {
        f"out_refund_no_{n}": refund.out_refund_no,
        f"refund_id_{n}": refund.refund_id,
        f"refund_channel_{n}": "ORIGINAL",
        f"refund_fee_{n}": refund.refund_fee,
        f"settlement_refund_fee_{n}": refund.refund_fee,
        f"refund_status_{n}": refund.status.v2_name,
        f"refund_account_{n}": refund.refund_account,
        f"refund_recv_accout_{n}": "支付用户零钱",
        f"refund_success_time_{n}": refund_time(success_time) if success_time else None,
    }
