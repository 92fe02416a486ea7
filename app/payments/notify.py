"""The v2 payment notify (PROTOCOL.md §5): from raw bytes to a committed verdict.

Steps, each with its own verdict: hardened parse; ``return_code``; signature over the raw
received fields with the notify's own sign type; our ``appid``/``mch_id``; the business fields;
then ``result_code`` decides between recording a failure and applying the payment.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.db import utcnow
from app.payments.service import (
    ACKNOWLEDGED,
    REFUSED,
    AuditRecord,
    PaymentResult,
    PaymentService,
    Verdict,
)
from app.wechat import signing
from app.wechat.timefmt import from_wechat_time
from app.wechat.xmlcodec import XmlRejected, from_xml

logger = logging.getLogger(__name__)

_EXCERPT = 2048


@dataclass(frozen=True, slots=True)
class NotifyOutcome:
    verdict: Verdict
    detail: str

    @property
    def acknowledged(self) -> bool:
        return self.verdict in ACKNOWLEDGED

    @property
    def refused(self) -> bool:
        """Not a message from WeChat about one of our orders (malformed, forged, not ours)."""
        return self.verdict in REFUSED


class Refused(Exception):
    def __init__(self, verdict: Verdict, detail: str, out_trade_no: str | None = None) -> None:
        super().__init__(detail)
        self.verdict = verdict
        self.detail = detail
        self.out_trade_no = out_trade_no


async def handle_payment_notify(
    body: bytes, conn: AsyncConnection, settings: Settings
) -> NotifyOutcome:
    """Verify a notify and apply it; the returned outcome is already committed."""
    service = PaymentService(conn)
    received_at = utcnow()
    try:
        fields = _parse(body)
    except Refused as refused:
        return await _refuse(service, refused, AuditRecord(_excerpt(body), received_at))
    audit = AuditRecord(json.dumps(fields, ensure_ascii=False), received_at)
    try:
        _check_origin(fields, settings)
        if fields.get("result_code") != "SUCCESS":
            return await _record_failure(service, fields, audit)
        result = _payment_result(fields)
    except Refused as refused:
        return await _refuse(service, refused, audit)
    verdict = await service.apply_paid(result, audit)
    return NotifyOutcome(verdict, verdict.value)


async def _refuse(service: PaymentService, refused: Refused, audit: AuditRecord) -> NotifyOutcome:
    await service.record(refused.verdict, audit, refused.detail, refused.out_trade_no)
    logger.warning("notify refused: %s (%s)", refused.verdict.value, refused.detail)
    return NotifyOutcome(refused.verdict, refused.detail)


async def _record_failure(
    service: PaymentService, fields: dict[str, str], audit: AuditRecord
) -> NotifyOutcome:
    # result_code=FAIL: the user's attempt failed; the order stays payable.
    detail = f"{fields.get('err_code', '')} {fields.get('err_code_des', '')}".strip()
    detail = detail or "payment failed"
    await service.record(Verdict.PAYMENT_FAILED, audit, detail, fields.get("out_trade_no"))
    return NotifyOutcome(Verdict.PAYMENT_FAILED, detail)


def _parse(body: bytes) -> dict[str, str]:
    try:
        return from_xml(body)
    except XmlRejected as exc:
        raise Refused(Verdict.BAD_XML, exc.fault.value) from exc


def _check_origin(fields: dict[str, str], settings: Settings) -> None:
    if fields.get("return_code") != "SUCCESS":
        raise Refused(Verdict.PROTOCOL_FAIL, "return_code is not SUCCESS")
    try:
        sign_type = signing.sign_type_of(fields, settings.sign_type)
    except ValueError as exc:
        raise Refused(Verdict.BAD_SIGNATURE, "unknown sign_type") from exc
    if not signing.verify(fields, settings.api_key.get_secret_value(), sign_type):
        raise Refused(
            Verdict.BAD_SIGNATURE, "signature does not verify", fields.get("out_trade_no")
        )
    if fields.get("appid") != settings.appid or fields.get("mch_id") != settings.mch_id:
        raise Refused(
            Verdict.WRONG_MERCHANT, "appid/mch_id are not ours", fields.get("out_trade_no")
        )


def _payment_result(fields: dict[str, str]) -> PaymentResult:
    try:
        return PaymentResult(
            out_trade_no=fields["out_trade_no"],
            transaction_id=fields["transaction_id"],
            total_fee=int(fields["total_fee"]),
            cash_fee=int(fields["cash_fee"]) if fields.get("cash_fee") else None,
            bank_type=fields.get("bank_type") or None,
            paid_at=from_wechat_time(fields["time_end"]) if fields.get("time_end") else None,
        )
    except (KeyError, ValueError) as exc:
        raise Refused(Verdict.BAD_FIELDS, f"missing or invalid field: {exc}") from exc


def _excerpt(body: bytes) -> str:
    return body[:_EXCERPT].decode("utf-8", errors="replace")
