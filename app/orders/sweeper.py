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

from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.repository import AuthRepository
from app.config import Settings
from app.db import utcnow
from app.orders.repository import OrderRecord, OrderRepository
from app.orders.service import OrderService
from app.orders.states import PAYABLE, OrderStatus
from app.payments.service import PaymentService
from app.refunds.sweep import settle_overdue_refunds
from app.wechat.client import WeChatPayClient
from app.wechat.errors import WeChatError

logger = logging.getLogger(__name__)

LEASE_SECONDS = 120


@dataclass(slots=True)
class SweepReport:
    claimed: int = 0
    paid: int = 0
    closed: int = 0
    failed: int = 0
    sessions_pruned: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)
    # out_refund_no -> the refund's status after the pass, or "ERROR".
    refunds: dict[str, str] = field(default_factory=dict)


async def sweep_once(
    engine: AsyncEngine, settings: Settings, pay: WeChatPayClient, payments: PaymentService
) -> SweepReport:
    """One pass over the unpaid orders that are due; safe to run in several processes."""
    report = SweepReport()
    due = utcnow() - dt.timedelta(minutes=settings.reconcile_after_minutes)
    async with engine.begin() as conn:
        claimed = await OrderRepository(conn).claim_for_sweep(
            due, LEASE_SECONDS, settings.sweep_batch_size
        )
        # Expired bearer tokens are useless; keep the sessions table from growing forever.
        report.sessions_pruned = await AuthRepository(conn).delete_expired_sessions(utcnow())
    report.claimed = len(claimed)
    for out_trade_no in claimed:
        outcome = await _reconcile(
            OrderService(engine, settings, pay, payments), engine, out_trade_no
        )
        report.outcomes[out_trade_no] = outcome
        report.paid += outcome == OrderStatus.SUCCESS
        report.closed += outcome == OrderStatus.CLOSED
        report.failed += outcome == "ERROR"
    report.refunds = await settle_overdue_refunds(engine, settings, pay)
    return report


async def _reconcile(service: OrderService, engine: AsyncEngine, out_trade_no: str) -> str:
    try:
        await service.sync_with_wechat(out_trade_no)
        order = await _reload(engine, out_trade_no)
        if order.status in PAYABLE and order.time_expire <= utcnow():
            await service.expire(out_trade_no)
            order = await _reload(engine, out_trade_no)
    except WeChatError as exc:
        logger.warning("sweep could not settle %s: %r", out_trade_no, exc)
        return "ERROR"
    return str(order.status)


async def _reload(engine: AsyncEngine, out_trade_no: str) -> OrderRecord:
    async with engine.begin() as conn:
        order = await OrderRepository(conn).by_out_trade_no(out_trade_no)
    assert order is not None  # claimed rows are never deleted
    return order


async def run_sweeper(
    engine: AsyncEngine, settings: Settings, pay: WeChatPayClient, payments: PaymentService
) -> None:
    """Sweep every ``sweep_interval_seconds`` until cancelled; a failed pass is only logged."""
    while True:
        try:
            report = await sweep_once(engine, settings, pay, payments)
            if report.claimed:
                logger.info(
                    "sweep: %d claimed, %d paid, %d closed, %d failed",
                    report.claimed,
                    report.paid,
                    report.closed,
                    report.failed,
                )
        except Exception:
            logger.exception("sweep pass failed; retrying next interval")
        await asyncio.sleep(settings.sweep_interval_seconds)
