"""The v2 refund notify (PROTOCOL.md §6.5): from raw bytes to a committed verdict.

The outer message carries no signature; the protocol adapter accepts it only if it names our
appid/mch_id and its ``req_info`` decrypts with our key. The decrypted result must then match
our record of the refund (order, transaction, amounts, WeChat's refund id) before anything
changes. A refund of one of our orders that we never asked for (made on the merchant
platform) is acknowledged and the order flagged for a person. Every notify is audited in
``payment_notifies``, in the transaction of its effect.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

from app.db import utcnow
from app.gateway import Gateways, InvalidNotification, PaymentGateway, RefundNotice
from app.inbound import NotifyOutcome, Refusal, Refusals
from app.orders.outbox import flag_and_record
from app.orders.repository import OrderRecord
from app.orders.states import ReviewReason
from app.payments.repository import AuditRow
from app.refunds.outcomes import apply_outcome
from app.refunds.repository import RefundRecord

if TYPE_CHECKING:
    from app.uow import Database, UnitOfWork

logger = logging.getLogger(__name__)


class RefundVerdict(StrEnum):
    APPLIED = "REFUND_APPLIED"
    DUPLICATE = "REFUND_DUPLICATE"
    # A legacy refund_status (FAIL, NOTSURE) that decides nothing; the sweep asks later.
    UNDECIDED = "REFUND_UNDECIDED"
    # A refund of our order that we did not ask for (merchant platform): flagged for review.
    OUTSIDE = "REFUND_OUTSIDE"
    UNKNOWN = "REFUND_UNKNOWN"
    MISMATCH = "REFUND_MISMATCH"
    CONFLICT = "REFUND_CONFLICT"
    REFUSED = "REFUND_REFUSED"


# Verdicts after which WeChat may stop sending: the outcome is committed or decides nothing.
REFUND_ACKNOWLEDGED = frozenset(
    {
        RefundVerdict.APPLIED,
        RefundVerdict.DUPLICATE,
        RefundVerdict.UNDECIDED,
        RefundVerdict.OUTSIDE,
    }
)


class RefundNotifies:
    def __init__(self, gateways: Gateways, db: Database, refusals: Refusals) -> None:
        self.gateways = gateways  # which versions have a notify URL, and who verifies each
        self._db = db
        self._refusals = refusals

    async def handle(
        self, gateway: PaymentGateway, body: bytes, headers: Mapping[str, str], peer: str
    ) -> NotifyOutcome:
        """Verify, decrypt and apply a refund notify; the outcome returned is committed."""
        verdict = await self._judge(gateway, body, headers, peer)
        return NotifyOutcome(
            acknowledged=verdict in REFUND_ACKNOWLEDGED,
            refused=verdict is RefundVerdict.REFUSED,
            detail=verdict.value,
        )

    async def _judge(
        self, gateway: PaymentGateway, body: bytes, headers: Mapping[str, str], peer: str
    ) -> RefundVerdict:
        received_at = utcnow()
        try:
            info = await gateway.parse_refund_notify(body, headers)
        except InvalidNotification as refused:
            verdict = RefundVerdict.REFUSED
            await self._refusals.record(
                Refusal(
                    "refund notify", verdict.value, refused.reason, body, headers, peer,
                    received_at,
                )
            )  # fmt: skip
            return verdict
        async with self._db.transaction() as tx:
            verdict = await _judge(tx, info)
            await tx.audit.record(_audit_row(info, verdict, received_at))
        return verdict


async def _judge(tx: UnitOfWork, info: RefundNotice) -> RefundVerdict:
    refund = await tx.refunds.by_out_refund_no(info.out_refund_no)
    if refund is None:
        return await _not_ours(tx, info)
    order = await tx.orders.by_id(refund.order_id)
    assert order is not None  # a refund's order is never deleted
    if not _agrees(refund, order, info):
        logger.error(
            "REFUND MISMATCH on %s: WeChat reports order %s, %s of %s fen, refund id %s",
            info.out_refund_no, info.out_trade_no, info.refund_fee, info.total_fee,
            info.refund_id,
        )  # fmt: skip
        await flag_and_record(tx, order.id, ReviewReason.REFUND_CONFLICT)
        return RefundVerdict.MISMATCH
    outcome = info.outcome
    if outcome is None:
        return RefundVerdict.UNDECIDED
    if await apply_outcome(tx, refund, outcome):
        return RefundVerdict.APPLIED
    # Read again: a racing duplicate may have committed the same move since we first looked.
    current = await tx.refunds.by_out_refund_no(info.out_refund_no)
    if current is not None and current.status == outcome.status:
        return RefundVerdict.DUPLICATE
    logger.error(
        "refund %s: WeChat reports %s, we hold %s",
        info.out_refund_no, outcome.status.value, current and current.status,
    )  # fmt: skip
    await flag_and_record(tx, order.id, ReviewReason.REFUND_CONFLICT)
    return RefundVerdict.CONFLICT


def _agrees(refund: RefundRecord, order: OrderRecord, info: RefundNotice) -> bool:
    ours = (order.out_trade_no, order.total_fee, refund.refund_fee)
    if ours != (info.out_trade_no, info.total_fee, info.refund_fee):
        return False
    if order.transaction_id and info.transaction_id != order.transaction_id:
        return False
    return not refund.refund_id or refund.refund_id == info.refund_id


async def _not_ours(tx: UnitOfWork, info: RefundNotice) -> RefundVerdict:
    order = await tx.orders.by_out_trade_no(info.out_trade_no)
    if order is None or order.transaction_id != info.transaction_id:
        logger.error("refund notify for unknown refund %s", info.out_refund_no)
        return RefundVerdict.UNKNOWN
    logger.warning(
        "order %s refunded outside this service (%s); flagged for review",
        info.out_trade_no, info.out_refund_no,
    )  # fmt: skip
    await flag_and_record(tx, order.id, ReviewReason.REFUND_OUTSIDE)
    return RefundVerdict.OUTSIDE


def _audit_row(info: RefundNotice, verdict: RefundVerdict, received_at: dt.datetime) -> AuditRow:
    return AuditRow(
        received_at=received_at,
        verdict=verdict.value,
        raw=info.audit,
        detail=f"{info.out_refund_no} {info.reported_status}",
        out_trade_no=info.out_trade_no,
        transaction_id=info.transaction_id,
        total_fee=info.total_fee,
    )
