"""The sweep's part for refunds: the ones nobody has heard of for a while.

A ``PENDING`` refund (WeChat did not confirm it) is asked about after a minute and sent again
only if WeChat has never seen it; a ``PROCESSING`` one whose notify is overdue is asked about.
Replicas share the work through the refunds' leases, taken one refund at a time.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from app.config import Settings
from app.db import utcnow
from app.refunds.service import RESEND_AFTER, RefundService

if TYPE_CHECKING:
    from app.uow import Database

logger = logging.getLogger(__name__)


async def settle_overdue_refunds(
    db: Database, settings: Settings, service: RefundService
) -> dict[str, str]:
    """``out_refund_no -> status`` after this pass, or ``"ERROR"``; one refund that cannot be
    settled never keeps the others from being settled."""
    now = utcnow()
    processing_due = now - dt.timedelta(minutes=settings.reconcile_after_minutes)
    async with db.statement() as tx:
        due_now = await tx.refunds.overdue(
            now - RESEND_AFTER, processing_due, settings.sweep_batch_size
        )
    outcomes: dict[str, str] = {}
    for out_refund_no in due_now:
        try:
            # Each refund is leased just before it is handled; one another worker holds is
            # skipped.
            refund = await service.settle(out_refund_no)
            if refund is not None:
                outcomes[out_refund_no] = refund.status
        except Exception:
            logger.exception("sweep could not settle refund %s", out_refund_no)
            outcomes[out_refund_no] = "ERROR"
    return outcomes
