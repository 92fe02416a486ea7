"""The v2 payment notify (PROTOCOL.md §5): from raw bytes to a committed verdict.

The protocol adapter verifies the message (hardened parse, ``return_code``, the signature over
every received field with the notify's own sign type, our ``appid``/``mch_id``, the required
fields); ``result_code`` then decides between recording a failed attempt and applying the
payment. Every notify is audited, refused ones included.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

from app.db import utcnow
from app.payments.service import (
    ACKNOWLEDGED,
    REFUSED,
    AuditRecord,
    PaymentResult,
    PaymentService,
    Verdict,
)
from app.wechat.client import WeChatPayClient
from app.wechat.errors import InvalidNotification, RefusalKind
from app.wechat.models import PaymentNotify
from app.wechat.timefmt import from_wechat_time

logger = logging.getLogger(__name__)

_EXCERPT = 8192
_REFUSAL_VERDICT = {
    RefusalKind.XML: Verdict.BAD_XML,
    RefusalKind.PROTOCOL: Verdict.PROTOCOL_FAIL,
    RefusalKind.SIGNATURE: Verdict.BAD_SIGNATURE,
    RefusalKind.MERCHANT: Verdict.WRONG_MERCHANT,
    RefusalKind.FIELDS: Verdict.BAD_FIELDS,
    RefusalKind.DECRYPTION: Verdict.BAD_FIELDS,
}


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


async def handle_payment_notify(
    body: bytes, service: PaymentService, pay: WeChatPayClient
) -> NotifyOutcome:
    """Verify a notify and apply it; the returned outcome is already committed."""
    received_at = utcnow()
    try:
        notify = pay.parse_payment_notify(body)
    except InvalidNotification as refused:
        verdict = _REFUSAL_VERDICT[refused.kind]
        await service.record(verdict, AuditRecord(body_excerpt(body), received_at), refused.reason)
        logger.warning("notify refused: %s (%s)", verdict.value, refused.reason)
        return NotifyOutcome(verdict, refused.reason)
    audit = AuditRecord(json.dumps(notify.raw, ensure_ascii=False), received_at)
    if not notify.is_paid:
        # result_code=FAIL: the user's attempt failed; the order stays payable.
        detail = f"{notify.err_code or ''} {notify.err_code_des or ''}".strip() or "payment failed"
        await service.record(Verdict.PAYMENT_FAILED, audit, detail, notify.out_trade_no)
        return NotifyOutcome(Verdict.PAYMENT_FAILED, detail)
    verdict = await service.apply_paid(_payment_result(notify), audit)
    return NotifyOutcome(verdict, verdict.value)


def _payment_result(notify: PaymentNotify) -> PaymentResult:
    # PaymentNotify guarantees these three on a paid notify.
    assert notify.out_trade_no and notify.transaction_id and notify.total_fee is not None
    return PaymentResult(
        out_trade_no=notify.out_trade_no,
        transaction_id=notify.transaction_id,
        total_fee=notify.total_fee,
        cash_fee=notify.cash_fee,
        bank_type=notify.bank_type,
        paid_at=_paid_at(notify.time_end),
    )


def _paid_at(time_end: str | None) -> dt.datetime | None:
    if not time_end:
        return None
    try:
        return from_wechat_time(time_end)
    except ValueError:
        return None  # a malformed time is not a reason to lose a verified payment


def body_excerpt(body: bytes) -> str:
    # PostgreSQL text cannot hold NUL; keep it visible without storing the byte.
    return body[:_EXCERPT].decode("utf-8", errors="replace").replace("\x00", "\\x00")
