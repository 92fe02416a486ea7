"""The background sweep: compensation for missed notifies, and expiry of unpaid orders.

WeChat's notify may never arrive (PROTOCOL.md §5: delivery is not guaranteed). Orders still
unpaid ``reconcile_after_minutes`` after creation are queried; what WeChat says is applied
through the notify's own rules; those past ``time_expire`` are then closed (query first, so an
order paid at the last second is recorded, never closed). Refunds WeChat has not confirmed, or
whose notify is overdue, are asked about the same way. Replicas share the work through short
leases on the rows, so nothing is handled twice at once and no lock is held across a call to
WeChat.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.config import Settings
from app.db import utcnow
from app.gateway import WeChatRejected, WeChatUnavailable
from app.metrics import SWEEP_ORDERS, SWEEP_PASSES, SWEEP_REFUNDS
from app.orders.repository import OrderRecord
from app.orders.service import OrderService
from app.orders.states import PAYABLE, OrderStatus
from app.payments.service import REFUSED
from app.ratelimits.service import RateLimiter
from app.refunds.notify import RefundVerdict
from app.refunds.service import RefundService
from app.refunds.sweep import settle_overdue_refunds

if TYPE_CHECKING:
    from app.uow import Database

logger = logging.getLogger(__name__)

LEASE_SECONDS = 120
REFUSED_VERDICTS = frozenset({*(v.value for v in REFUSED), RefundVerdict.REFUSED.value})


@dataclass(slots=True)
class SweepReport:
    claimed: int = 0
    paid: int = 0
    closed: int = 0
    failed: int = 0
    sessions_pruned: int = 0
    refused_notifies_pruned: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)
    # out_refund_no -> the refund's status after the pass, or "ERROR".
    refunds: dict[str, str] = field(default_factory=dict)


# What order query may report that leaves a claimed order as it was (None: WeChat never saw it).
_UNCHANGED = frozenset({None, OrderStatus.NOTPAY})


class Sweeper:
    """Built once, by the composition root, from the same services the routes use."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        orders: OrderService,
        refunds: RefundService,
        limiter: RateLimiter,
    ) -> None:
        self._db = db
        self._settings = settings
        self._orders = orders
        self._refunds = refunds
        self._limiter = limiter

    async def sweep_once(self) -> SweepReport:
        """One pass over the unpaid orders that are due; safe to run in several processes."""
        report = SweepReport()
        due = utcnow() - dt.timedelta(minutes=self._settings.reconcile_after_minutes)
        async with self._db.transaction() as tx:
            claimed = await tx.orders.claim_for_sweep(
                due, LEASE_SECONDS, self._settings.sweep_batch_size
            )
            # Expired bearer tokens are useless; keep the sessions table from growing forever.
            report.sessions_pruned = await tx.auth.delete_expired_sessions(utcnow())
        report.refused_notifies_pruned = await self._prune_refusals()
        report.claimed = len(claimed)
        for order in claimed:
            outcome = await self._reconcile(order)
            report.outcomes[order.out_trade_no] = outcome
            report.paid += outcome == OrderStatus.SUCCESS
            report.closed += outcome == OrderStatus.CLOSED
            report.failed += outcome == "ERROR"
        report.refunds = await settle_overdue_refunds(self._db, self._settings, self._refunds)
        _count(report)
        return report

    async def _prune_refusals(self) -> int:
        """Refused notifies are kept ``refused_notify_retention_days`` (strangers' junk must
        not fill the table), and rate-limit windows a day (none is longer than an hour)."""
        keep = dt.timedelta(days=self._settings.refused_notify_retention_days)
        async with self._db.statement() as tx:
            pruned = await tx.audit.prune(REFUSED_VERDICTS, utcnow() - keep)
        await self._limiter.prune(older_than_seconds=86_400)
        return pruned

    async def run_forever(self) -> None:
        """Sweep every ``sweep_interval_seconds`` until cancelled; a failed pass is only logged."""
        while True:
            try:
                report = await self.sweep_once()
                if report.claimed:
                    logger.info(
                        "sweep: %d claimed, %d paid, %d closed, %d failed",
                        report.claimed,
                        report.paid,
                        report.closed,
                        report.failed,
                    )
            except Exception:
                SWEEP_PASSES.labels("error").inc()
                logger.exception("sweep pass failed; retrying next interval")
            await asyncio.sleep(self._settings.sweep_interval_seconds)

    async def _reconcile(self, claimed: OrderRecord) -> str:
        out_trade_no = claimed.out_trade_no
        try:
            reported = await self._orders.sync_with_wechat(claimed)
            # Unpaid at WeChat (or unknown there) changes nothing: the claimed row, leased to
            # this pass, is still current, so it is not read again.
            unchanged = reported in _UNCHANGED
            order = claimed if unchanged else await self._reload(out_trade_no)
            if order.status in PAYABLE and order.time_expire <= utcnow():
                if await self._orders.expire(order):
                    return str(OrderStatus.CLOSED)
                order = await self._reload(out_trade_no)
        except (WeChatRejected, WeChatUnavailable) as exc:
            logger.warning("sweep could not settle %s: %r", out_trade_no, exc)
            return "ERROR"
        return str(order.status)

    async def _reload(self, out_trade_no: str) -> OrderRecord:
        async with self._db.statement() as tx:
            order = await tx.orders.by_out_trade_no(out_trade_no)
        assert order is not None  # claimed rows are never deleted
        return order


def _count(report: SweepReport) -> None:
    SWEEP_PASSES.labels("ok").inc()
    for status in report.outcomes.values():
        SWEEP_ORDERS.labels(status).inc()
    for status in report.refunds.values():
        SWEEP_REFUNDS.labels(status).inc()
