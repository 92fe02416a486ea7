"""WeChat Pay API v3 behind the payment-gateway port (``app.gateway``).

The only place where v3's JSON shapes, error codes and RFC 3339 times meet our types. Section
numbers (§) refer to ../shared/wechat/PROTOCOL.md.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping

from fastapi import Response
from fastapi.responses import JSONResponse

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
from app.wechat.errors import InvalidNotification, RefusalKind, WeChatRejected, WeChatUnavailable
from app.wechat.timefmt import to_rfc3339
from app.wechat.v3client import V3Refund, V3Rejected, V3Transaction, WeChatPayV3Client
from app.wechat.v3trust import PlatformCertificate

# Every "not found" v3 has been seen to answer (§8.1, §8.7; §11: spellings differ between
# generations of its docs). Only some of them, signed, decide anything (below).
_NOT_FOUND = frozenset({"ORDER_NOT_EXIST", "ORDERNOTEXIST", "RESOURCE_NOT_EXISTS", "NOT_FOUND"})
# What WeChat Pay answers a query or a close for an order it does not have, and a refund
# query for a refund it does not have: HTTP 404 with one of these codes.
_NOT_FOUND_STATUS = 404
_NO_SUCH_ORDER = frozenset({"ORDER_NOT_EXIST", "ORDERNOTEXIST"})
_NO_SUCH_REFUND = frozenset({"RESOURCE_NOT_EXISTS", "ORDER_NOT_EXIST", "ORDERNOTEXIST"})
# What it answers a close for an order already closed (§8.1).
_CLOSED_STATUS = 400
_ORDER_CLOSED = frozenset({"ORDER_CLOSED"})
# Refusals that mean "not now" (§8.1): the refund stays PENDING and is sent again later.
_REFUND_LATER = frozenset({"NOT_ENOUGH", "NOTENOUGH", "FREQUENCY_LIMITED"})
# v3 refund states onto ours, so the API and the events keep one vocabulary (§8.7).
_REFUND_STATUS = {
    "PROCESSING": RefundStatus.PROCESSING,
    "SUCCESS": RefundStatus.SUCCESS,
    "ABNORMAL": RefundStatus.CHANGE,
    "CLOSED": RefundStatus.REFUNDCLOSE,
}
_PAYMENT_EVENT = "TRANSACTION.SUCCESS"


class UnprovenRejection(WeChatUnavailable):
    """A refusal we would act on ("no such order", "already closed", "no such refund") that is
    not provably WeChat Pay's own: the wrong status or code, or no signature we trust (a wrong
    host, a proxy's error page). Nothing is decided on it; it is asked again later.

    WeChat checks a request's signature before it looks the order up, and signs its answer
    once that signature holds (its v3 signing guide, 签名验证: "如果验证商户的请求签名正确，
    微信支付会在应答的HTTP头部中包括应答签名"), so a signed refusal proves the address, the
    merchant id and both keys. An unsigned ``{"code": "ORDER_NOT_EXIST"}`` proves nothing, and
    believing it could close an order that was in fact paid."""


def _wechat_says(exc: WeChatRejected, codes: frozenset[str], status: int | None = None) -> bool:
    """Whether ``exc`` is WeChat Pay's own refusal with one of ``codes`` (and ``status``),
    signed with a key we trust (§8.3)."""
    return (
        isinstance(exc, V3Rejected)
        and exc.verified
        and exc.err_code in codes
        and (status is None or exc.status == status)
    )


def _unproven(exc: WeChatRejected, meaning: str) -> UnprovenRejection:
    v3 = exc if isinstance(exc, V3Rejected) else None
    status = v3.status if v3 else "?"
    signed = "signed" if v3 and v3.verified else "not signed by WeChat Pay"
    return UnprovenRejection(
        f"WeChat Pay v3 answered HTTP {status} {exc.err_code} ({signed}), not WeChat Pay's "
        f"signed {meaning}",
        err_code=exc.err_code,
    )


class WeChatPayV3Gateway:
    """``PaymentGateway`` over ``WeChatPayV3Client``."""

    version = ApiVersion.V3
    sign_type = "RSA"

    def __init__(
        self, client: WeChatPayV3Client, *, notify_url: str, refund_notify_url: str | None
    ) -> None:
        self._client = client
        self._notify_url = notify_url
        self._refund_notify_url = refund_notify_url

    async def prepay(self, order: PrepayOrder) -> str:
        return await self._client.jsapi_prepay(
            description=order.description,
            out_trade_no=order.out_trade_no,
            total=order.total_fee,
            openid=order.openid,
            notify_url=self._notify_url,
            time_expire=to_rfc3339(order.time_expire),
            attach=order.attach,
            payer_client_ip=order.client_ip,
        )

    def pay_params(self, prepay_id: str) -> dict[str, str]:
        return self._client.pay_params(prepay_id)

    async def query(self, out_trade_no: str) -> TradeReport | None:
        """None only when WeChat Pay itself says it has no such order: HTTP 404
        ``ORDER_NOT_EXIST``, signed (§8.1, §8.3). Any other "not found" raises
        ``UnprovenRejection``: the sweep and the order sync then decide nothing and ask again."""
        try:
            transaction = await self._client.query(out_trade_no)
        except WeChatRejected as exc:
            if _wechat_says(exc, _NO_SUCH_ORDER, _NOT_FOUND_STATUS):
                return None
            if exc.err_code in _NOT_FOUND:
                raise _unproven(exc, "404 ORDER_NOT_EXIST") from None
            raise
        return _trade_report(transaction)

    async def platform_certificates(self) -> list[PlatformCertificate]:
        """WeChat Pay's platform certificates as it lists them now (§8.6), each checked (see
        ``WeChatPayV3Client.download_certificates``) and trusted from then on."""
        certificates = await self._client.download_certificates()
        self._client.trust.accept(certificates)
        return certificates

    async def close(self, out_trade_no: str) -> CloseOutcome:
        """v3 closes an order with 204 and names no "already paid" code of its own (§8.7), so a
        refusal other than WeChat Pay's signed "closed" or "no such order" is checked against
        the order itself: paid, and the query that follows records the payment; closed or
        unknown (as a signed query says), and nobody can pay it."""
        try:
            await self._client.close(out_trade_no)
        except WeChatRejected as exc:
            if _wechat_says(exc, _ORDER_CLOSED, _CLOSED_STATUS) or _wechat_says(
                exc, _NO_SUCH_ORDER, _NOT_FOUND_STATUS
            ):
                return CloseOutcome.CLOSED
            report = await self.query(out_trade_no)
            if report is None or report.status is OrderStatus.CLOSED:
                return CloseOutcome.CLOSED
            if report.payment is not None:
                return CloseOutcome.PAID
            raise
        return CloseOutcome.CLOSED

    async def refund(self, refund: RefundOrder) -> str:
        try:
            answer = await self._client.refund(
                out_trade_no=refund.out_trade_no,
                out_refund_no=refund.out_refund_no,
                refund=refund.refund_fee,
                total=refund.total_fee,
                reason=refund.reason,
                notify_url=self._refund_notify_url,
            )
        except WeChatRejected as exc:
            if exc.err_code in _REFUND_LATER:
                raise WeChatUnavailable(
                    f"{exc.err_code}: {exc.reason}", err_code=exc.err_code
                ) from exc
            raise
        return answer.refund_id

    async def refund_query(self, out_refund_no: str) -> RefundReport | None:
        try:
            refund = await self._client.refund_query(out_refund_no)
        except WeChatRejected as exc:
            if _wechat_says(exc, _NO_SUCH_REFUND, _NOT_FOUND_STATUS):
                return None  # WeChat never saw it: the refund service may send it again
            if exc.err_code in _NOT_FOUND:
                raise _unproven(exc, "404 RESOURCE_NOT_EXISTS") from None
            raise
        return RefundReport(_outcome(refund))

    async def parse_payment_notify(self, body: bytes, headers: Mapping[str, str]) -> PaymentNotice:
        """§8.5: the signature over the raw body first, then the resource, our appid and
        mchid (checked by the client) and the amount."""
        transaction = await self._client.parse_payment_notify(headers, body)
        if transaction.trade_state != "SUCCESS" or _event_type(body) != _PAYMENT_EVENT:
            # v3 notifies only payments; anything else decides nothing here.
            raise InvalidNotification("not a TRANSACTION.SUCCESS notify", RefusalKind.PROTOCOL)
        if not transaction.transaction_id:
            raise InvalidNotification("no transaction_id in the transaction", RefusalKind.FIELDS)
        audit = transaction.model_dump_json()
        return PaymentNotice(transaction.out_trade_no, _payment(transaction), "", audit)

    async def parse_refund_notify(self, body: bytes, headers: Mapping[str, str]) -> RefundNotice:
        """§8.7: a verified refund resource for our mchid; it carries no appid."""
        refund = await self._client.parse_refund_notify(headers, body)
        if not refund.transaction_id:
            raise InvalidNotification("no transaction_id in the refund", RefusalKind.FIELDS)
        kept = refund.model_dump(exclude={"user_received_account"})  # where the money went
        return RefundNotice(
            out_refund_no=refund.out_refund_no,
            out_trade_no=refund.out_trade_no,
            transaction_id=refund.transaction_id,
            refund_id=refund.refund_id,
            total_fee=refund.amount.total,
            refund_fee=refund.amount.refund,
            outcome=_outcome(refund),
            reported_status=refund.status,
            audit=json.dumps(kept, ensure_ascii=False),
        )

    def notify_reply(self, acknowledged: bool, message: str, status: int) -> Response:
        """§8.5: WeChat decides on the HTTP status: 204 stops the retries; a refusal must be
        non-2xx (a 200 with ``FAIL`` counts as success), with ``{"code": "FAIL", ...}``."""
        if acknowledged:
            return Response(status_code=204)
        return JSONResponse({"code": "FAIL", "message": message}, status_code=max(status, 400))


def _trade_report(transaction: V3Transaction) -> TradeReport:
    status = order_status_of(transaction.trade_state)
    paid = status in (OrderStatus.SUCCESS, OrderStatus.REFUND)
    return TradeReport(status, _payment(transaction) if paid else None)


def _payment(transaction: V3Transaction) -> PaymentResult:
    if not transaction.transaction_id or transaction.amount is None:
        # A paid transaction always carries both; without them it cannot be trusted.
        raise WeChatUnavailable("WeChat Pay v3 reported a payment without its id or amount")
    extra = transaction.model_extra or {}
    bank_type = extra.get("bank_type")
    return PaymentResult(
        out_trade_no=transaction.out_trade_no,
        transaction_id=transaction.transaction_id,
        total_fee=transaction.amount.total,
        cash_fee=transaction.amount.payer_total,
        bank_type=bank_type if isinstance(bank_type, str) else None,
        paid_at=_time(transaction.success_time),
    )


def _outcome(refund: V3Refund) -> RefundOutcome | None:
    status = _REFUND_STATUS.get(refund.status)
    if status is None:
        return None
    return RefundOutcome(status, refund.refund_id, _time(refund.success_time))


def _time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 time WeChat reported, or None: a malformed time is no reason to lose a
    verified outcome."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(dt.UTC) if moment.tzinfo else None


def _event_type(body: bytes) -> str | None:
    # Only reached once the body's signature verified and its resource decrypted.
    try:
        event = json.loads(body).get("event_type")
    except (ValueError, AttributeError):
        return None
    return event if isinstance(event, str) else None
