"""Applying WeChat's word on a refund, whoever brings it: our request's reply, a refund query,
the refund notify. One function, so the rules live in one place (PROTOCOL.md §6.3-6.5)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.gateway import RefundOutcome
from app.orders.outbox import flag_and_record
from app.orders.states import ReviewReason
from app.refunds.outbox import record_refund_event
from app.refunds.repository import RefundRecord
from app.refunds.states import RELEASES_AMOUNT, RefundStatus

if TYPE_CHECKING:
    from app.uow import UnitOfWork

logger = logging.getLogger(__name__)


async def apply_outcome(tx: UnitOfWork, refund: RefundRecord, outcome: RefundOutcome) -> bool:
    """The guarded move and what comes with it, in the caller's transaction; False if the
    refund was not in a status the move starts from (already applied, or contradicted).

    - ``FAILED`` and ``REFUNDCLOSE`` give the amount back to the order, once.
    - Any other outcome means WeChat accepted the refund: the order becomes ``REFUND``, as
      WeChat's order query reports it from then on (§6.1), even if the refund later closes.
    - ``CHANGE`` (the money could not reach the user) is flagged for a person.
    - A final status raises its event (``refund.succeeded``, ``.failed``, ``.abnormal``).
    """
    moved = await tx.refunds.move(
        refund.out_refund_no, outcome.status, outcome.refund_id, outcome.success_time
    )
    if moved is None:
        return False
    if outcome.status in RELEASES_AMOUNT:
        await tx.orders.release_refund(moved.order_id, moved.refund_fee)
    else:
        await tx.orders.mark_refunded(moved.order_id)
    await record_refund_event(tx, moved)
    if outcome.status is RefundStatus.CHANGE:
        logger.error(
            "refund %s could not reach the user; finish it on the merchant platform",
            refund.out_refund_no,
        )
        await flag_and_record(tx, moved.order_id, ReviewReason.REFUND_CHANGE)
    return True
