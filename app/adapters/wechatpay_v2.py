"""WeChat Pay API v2 behind the payment-gateway port (``app.gateway``).

The only place where v2's wire models, error codes and time formats meet our types. Section
numbers (§) refer to ../shared/wechat/PROTOCOL.md.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping

from fastapi import Response

from app.gateway import (
    ApiVersion,
    CloseOutcome,
    PaymentNotice,
    PaymentResult,
    PrepayOrder,
    RefundNotice,
    RefundOrder,
    RefundOutcome,
    RefundReport,
    TradeReport,
    order_status_of,
)
from app.orders.states import OrderStatus
from app.refunds.states import RefundStatus
from app.wechat.client import WeChatPayClient
from app.wechat.errors import WeChatRejected, WeChatUnavailable
from app.wechat.models import (
    CloseOrderRequest,
    OrderQueryRequest,
    OrderQueryResponse,
    PaymentNotify,
    RefundNotifyInfo,
    RefundQueryRequest,
    RefundRequest,
    UnifiedOrderRequest,
)
from app.wechat.timefmt import from_refund_time, from_wechat_time, to_wechat_time
from app.wechat.xmlcodec import to_xml

# Refund refusals that mean "not now" (§6.3): the refund stays PENDING and is sent again later.
_REFUND_LATER = frozenset({"NOTENOUGH", "FREQUENCY_LIMITED", "INVALID_REQ_TOO_MUCH"})
# The closed order's own answers to a close (§6.2): nobody can pay it any more.
_ALREADY_CLOSED = frozenset({"ORDERCLOSED", "ORDERNOTEXIST"})
# v2's refund_status values that decide a refund (§6.4, §6.5); the legacy FAIL and NOTSURE
# decide nothing.
_REFUND_STATUS = {
    status.value: status
    for status in (
        RefundStatus.PROCESSING,
        RefundStatus.SUCCESS,
        RefundStatus.CHANGE,
        RefundStatus.REFUNDCLOSE,
    )
}


class WeChatPayV2Gateway:
    """``PaymentGateway`` over ``WeChatPayClient``."""

    version = ApiVersion.V2

    def __init__(
        self, client: WeChatPayClient, *, notify_url: str, refund_notify_url: str | None
    ) -> None:
        self._client = client
        self._notify_url = notify_url
        self._refund_notify_url = refund_notify_url

    @property
    def sign_type(self) -> str:
        return self._client.sign_type.value

    async def prepay(self, order: PrepayOrder) -> str:
        request = UnifiedOrderRequest(
            body=order.description,
            attach=order.attach,
            out_trade_no=order.out_trade_no,
            total_fee=order.total_fee,
            spbill_create_ip=order.client_ip,
            time_expire=to_wechat_time(order.time_expire),
            notify_url=self._notify_url,
            trade_type="JSAPI",
            openid=order.openid,
        )
        return (await self._client.unified_order(request)).prepay_id

    def pay_params(self, prepay_id: str) -> dict[str, str]:
        return self._client.pay_params(prepay_id)

    async def query(self, out_trade_no: str) -> TradeReport | None:
        try:
            result = await self._client.order_query(OrderQueryRequest(out_trade_no=out_trade_no))
        except WeChatRejected as exc:
            if exc.err_code == "ORDERNOTEXIST":
                return None
            raise
        status = order_status_of(str(result.trade_state))
        paid = status in (OrderStatus.SUCCESS, OrderStatus.REFUND)
        return TradeReport(status, _queried_payment(out_trade_no, result) if paid else None)

    async def close(self, out_trade_no: str) -> CloseOutcome:
        try:
            await self._client.close_order(CloseOrderRequest(out_trade_no=out_trade_no))
        except WeChatRejected as exc:
            if exc.err_code == "ORDERPAID":
                return CloseOutcome.PAID
            if exc.err_code not in _ALREADY_CLOSED:
                raise
        return CloseOutcome.CLOSED

    async def refund(self, refund: RefundOrder) -> str:
        request = RefundRequest(
            out_trade_no=refund.out_trade_no,
            out_refund_no=refund.out_refund_no,
            total_fee=refund.total_fee,
            refund_fee=refund.refund_fee,
            refund_desc=refund.reason,
            notify_url=self._refund_notify_url,
        )
        try:
            return (await self._client.refund(request)).refund_id
        except WeChatRejected as exc:
            if exc.err_code in _REFUND_LATER:
                raise WeChatUnavailable(
                    f"{exc.err_code}: {exc.reason}", err_code=exc.err_code
                ) from exc
            raise

    async def refund_query(self, out_refund_no: str) -> RefundReport | None:
        try:
            result = await self._client.refund_query(
                RefundQueryRequest(out_refund_no=out_refund_no)
            )
        except WeChatRejected as exc:
            if exc.err_code == "REFUNDNOTEXIST":
                return None
            raise
        for item in result.refunds:
            if item.out_refund_no == out_refund_no:
                return RefundReport(
                    _outcome(item.refund_status.value, item.refund_id, item.refund_success_time)
                )
        return None

    async def parse_payment_notify(self, body: bytes, headers: Mapping[str, str]) -> PaymentNotice:
        """§5: v2 signs inside the body, so the headers say nothing."""
        notify = self._client.parse_payment_notify(body)
        audit = json.dumps(notify.raw, ensure_ascii=False)
        if not notify.is_paid:
            # result_code=FAIL: the user's attempt failed; the order stays payable.
            reason = f"{notify.err_code or ''} {notify.err_code_des or ''}".strip()
            return PaymentNotice(notify.out_trade_no, None, reason or "payment failed", audit)
        return PaymentNotice(notify.out_trade_no, _notified_payment(notify), "", audit)

    async def parse_refund_notify(self, body: bytes, headers: Mapping[str, str]) -> RefundNotice:
        """§6.5: unsigned; it counts only because ``req_info`` decrypts under our key."""
        info = self._client.decrypt_refund_notify(body)
        return RefundNotice(
            out_refund_no=info.out_refund_no,
            out_trade_no=info.out_trade_no,
            transaction_id=info.transaction_id,
            refund_id=info.refund_id,
            total_fee=info.total_fee,
            refund_fee=info.refund_fee,
            outcome=_outcome(info.refund_status.value, info.refund_id, info.success_time),
            reported_status=info.refund_status.value,
            audit=_refund_audit(info),
        )

    def notify_reply(self, acknowledged: bool, message: str, status: int) -> Response:
        """§5: ``return_code`` SUCCESS stops WeChat's retries; FAIL (or no answer) retries."""
        code = "SUCCESS" if acknowledged else "FAIL"
        body = to_xml({"return_code": code, "return_msg": message})
        return Response(body, status_code=status, media_type="application/xml")


def _queried_payment(out_trade_no: str, result: OrderQueryResponse) -> PaymentResult:
    if not result.transaction_id or result.total_fee is None:
        # A paid order always has both; without them the answer cannot be trusted.
        raise WeChatUnavailable(
            "order query reported a payment without transaction_id or total_fee"
        )
    return PaymentResult(
        out_trade_no=out_trade_no,
        transaction_id=result.transaction_id,
        total_fee=result.total_fee,
        cash_fee=result.cash_fee,
        bank_type=result.bank_type,
        paid_at=_lenient(from_wechat_time, result.time_end),
    )


def _notified_payment(notify: PaymentNotify) -> PaymentResult:
    # PaymentNotify guarantees these three on a paid notify.
    assert notify.out_trade_no and notify.transaction_id and notify.total_fee is not None
    return PaymentResult(
        out_trade_no=notify.out_trade_no,
        transaction_id=notify.transaction_id,
        total_fee=notify.total_fee,
        cash_fee=notify.cash_fee,
        bank_type=notify.bank_type,
        paid_at=_lenient(from_wechat_time, notify.time_end),
    )


def _outcome(status: str, refund_id: str | None, success_time: str | None) -> RefundOutcome | None:
    """v2's ``refund_status`` as an outcome; None for the legacy values that decide nothing
    (``FAIL``, ``NOTSURE``: left open for the next query)."""
    target = _REFUND_STATUS.get(status)
    if target is None:
        return None
    return RefundOutcome(target, refund_id, _lenient(from_refund_time, success_time))


def _lenient(parse: Callable[[str], dt.datetime], text: str | None) -> dt.datetime | None:
    """A time WeChat reported, or None: a malformed time is no reason to lose a verified
    outcome."""
    if not text:
        return None
    try:
        return parse(text)
    except ValueError:
        return None


def _refund_audit(info: RefundNotifyInfo) -> str:
    # The decrypted result, minus where the money went (a bank and card tail): ids, amounts
    # and the status are what an audit needs.
    kept = {k: v for k, v in info.raw.items() if k != "refund_recv_accout"}
    return json.dumps(kept, ensure_ascii=False)
