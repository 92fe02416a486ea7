"""The sweep's part for refunds: the ones nobody has heard of for a while.

A ``PENDING`` refund (WeChat did not confirm it) is asked about after a minute and sent again
only if WeChat has never seen it; a ``PROCESSING`` one whose notify is overdue is asked about.
Replicas share the work through the refunds' leases, taken one refund at a time.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import utcnow
from app.refunds.repository import RefundRepository
from app.refunds.service import RESEND_AFTER, RefundService
from app.refunds.states import RefundStatus
from app.wechat.client import WeChatPayClient

logger = logging.getLogger(__name__)


async def settle_overdue_refunds(
    engine: AsyncEngine, settings: Settings, pay: WeChatPayClient
) -> dict[str, str]:
    """``out_refund_no -> status`` after this pass, or ``"ERROR"``; one refund that cannot be
    settled never keeps the others from being settled."""
    now = utcnow()
    due = {
        RefundStatus.PENDING: now - RESEND_AFTER,
        RefundStatus.PROCESSING: now - dt.timedelta(minutes=settings.reconcile_after_minutes),
    }
    async with engine.connect() as conn:
        due_now = await RefundRepository(conn).overdue(due, settings.sweep_batch_size)
    service = RefundService(engine, settings, pay)
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
