"""The payment notify (PROTOCOL.md §5): from raw bytes to a committed verdict.

The gateway verifies the message over the raw bytes (v2: hardened parse, ``return_code``, the
signature over every received field with the notify's own sign type, our ``appid``/``mch_id``,
the required fields) and says whether the user paid; a failed attempt is recorded, a payment
applied. Every notify is audited, refused ones included, in the transaction of its effect.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from app.db import utcnow
from app.gateway import Gateways, InvalidNotification, PaymentGateway, RefusalKind
from app.inbound import NotifyOutcome, Refusal, Refusals
from app.payments.service import ACKNOWLEDGED, REFUSED, AuditRecord, PaymentService, Verdict

logger = logging.getLogger(__name__)

_REFUSAL_VERDICT = {
    RefusalKind.XML: Verdict.BAD_XML,
    RefusalKind.PROTOCOL: Verdict.PROTOCOL_FAIL,
    RefusalKind.SIGNATURE: Verdict.BAD_SIGNATURE,
    RefusalKind.MERCHANT: Verdict.WRONG_MERCHANT,
    RefusalKind.FIELDS: Verdict.BAD_FIELDS,
    RefusalKind.DECRYPTION: Verdict.BAD_FIELDS,
}


class PaymentNotifies:
    """Applies one payment notify; the outcome it returns is already committed."""

    def __init__(self, gateways: Gateways, payments: PaymentService, refusals: Refusals) -> None:
        self.gateways = gateways  # which versions have a notify URL, and who verifies each
        self._payments = payments
        self._refusals = refusals

    async def handle(
        self, gateway: PaymentGateway, body: bytes, headers: Mapping[str, str], peer: str
    ) -> NotifyOutcome:
        received_at = utcnow()
        try:
            notice = await gateway.parse_payment_notify(body, headers)
        except InvalidNotification as refused:
            verdict = _REFUSAL_VERDICT[refused.kind]
            await self._refusals.record(
                Refusal(
                    "payment notify", verdict.value, refused.reason, body, headers, peer,
                    received_at,
                )
            )  # fmt: skip
            return _outcome(verdict, refused.reason)
        audit = AuditRecord(notice.audit, received_at)
        if notice.payment is None:
            # The user's attempt failed; the order stays payable.
            await self._payments.record(
                Verdict.PAYMENT_FAILED, audit, notice.failure, notice.out_trade_no
            )
            return _outcome(Verdict.PAYMENT_FAILED, notice.failure)
        verdict = await self._payments.apply_paid(notice.payment, audit)
        return _outcome(verdict, verdict.value)


def _outcome(verdict: Verdict, detail: str) -> NotifyOutcome:
    return NotifyOutcome(
        acknowledged=verdict in ACKNOWLEDGED, refused=verdict in REFUSED, detail=detail
    )
