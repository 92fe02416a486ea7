"""Applying what WeChat says about a payment, exactly once.

One code path for every source of truth: the notify, an order query on demand, and the
compensation sweep all end in ``PaymentService.apply_paid``. The rules, in order:

- The amount WeChat reports (``total_fee``, not ``cash_fee``: coupons lower the latter) must equal
  the stored amount; otherwise nothing is paid and the order is flagged for review.
- Only an unpaid order (``NOTPAY``/``PAYERROR``) moves to ``SUCCESS``, once, through one guarded
  UPDATE; a duplicate with the same ``transaction_id`` changes nothing.
- A payment for an order we already closed is real money: it is recorded, and flagged for review.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.orders.states import ReviewReason
from app.payments.pgrepository import AsyncpgPaymentRepository
from app.payments.repository import (
    AuditRow,
    DuplicateTransaction,
    PaymentRepo,
    PaymentRepository,
)

logger = logging.getLogger(__name__)


class Verdict(StrEnum):
    PAID = "PAID"
    DUPLICATE = "DUPLICATE"
    PAID_AFTER_CLOSE = "PAID_AFTER_CLOSE"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    TRANSACTION_CONFLICT = "TRANSACTION_CONFLICT"
    # Refused before any order is looked at.
    BAD_XML = "BAD_XML"
    PROTOCOL_FAIL = "PROTOCOL_FAIL"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    WRONG_MERCHANT = "WRONG_MERCHANT"
    BAD_FIELDS = "BAD_FIELDS"


# Verdicts after which WeChat may stop retrying: the outcome is committed or needs no action.
ACKNOWLEDGED = frozenset(
    {Verdict.PAID, Verdict.DUPLICATE, Verdict.PAID_AFTER_CLOSE, Verdict.PAYMENT_FAILED}
)
# Verdicts on messages that never reached an order: not WeChat's, or not well-formed.
REFUSED = frozenset(
    {
        Verdict.BAD_XML,
        Verdict.PROTOCOL_FAIL,
        Verdict.BAD_SIGNATURE,
        Verdict.WRONG_MERCHANT,
        Verdict.BAD_FIELDS,
    }
)


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """What WeChat reports about a successful payment."""

    out_trade_no: str
    transaction_id: str
    total_fee: int
    cash_fee: int | None
    bank_type: str | None
    paid_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """How the message that carried a result is recorded beside its effect."""

    raw: str
    received_at: dt.datetime


Transaction = Callable[[], AbstractAsyncContextManager[PaymentRepo]]


def sqlalchemy_transaction(engine: AsyncEngine) -> Transaction:
    """Payment transactions on any SQLAlchemy engine (SQLite here)."""

    @asynccontextmanager
    async def transaction() -> AsyncIterator[PaymentRepo]:
        async with engine.begin() as conn:
            yield PaymentRepository(conn)

    return transaction


def asyncpg_transaction(pool: asyncpg.Pool[asyncpg.Record]) -> Transaction:
    """Payment transactions on an asyncpg pool (PostgreSQL: the notify's hot path)."""

    @asynccontextmanager
    async def transaction() -> AsyncIterator[PaymentRepo]:
        async with pool.acquire() as conn, conn.transaction():
            yield AsyncpgPaymentRepository(conn)

    return transaction


class PaymentService:
    def __init__(self, transaction: Transaction) -> None:
        self._transaction = transaction

    async def apply_paid(self, result: PaymentResult, audit: AuditRecord | None = None) -> Verdict:
        """Apply a successful payment once; the audit row commits with its effect."""
        try:
            async with self._transaction() as repo:
                verdict = await _settle(repo, result)
                if audit is not None:
                    await repo.audit(_audit_row(verdict, result, audit))
        except DuplicateTransaction:
            # Another order already holds this WeChat transaction. Money and records
            # disagree; a human must look.
            logger.error("transaction %s already belongs to another order", result.transaction_id)
            verdict = Verdict.TRANSACTION_CONFLICT
            async with self._transaction() as repo:
                await _flag(repo, result.out_trade_no, ReviewReason.TRANSACTION_CONFLICT)
                if audit is not None:
                    await repo.audit(_audit_row(verdict, result, audit))
        return verdict

    async def record(
        self, verdict: Verdict, audit: AuditRecord, detail: str, out_trade_no: str | None = None
    ) -> None:
        """Audit a notify that changes no order (refused, or a failed payment)."""
        row = AuditRow(audit.received_at, verdict.value, audit.raw, detail, out_trade_no)
        async with self._transaction() as repo:
            await repo.audit(row)


async def _settle(repo: PaymentRepo, result: PaymentResult) -> Verdict:
    values = {
        "transaction_id": result.transaction_id,
        "paid_at": result.paid_at,
        "cash_fee": result.cash_fee,
        "bank_type": result.bank_type,
    }
    no, fee = result.out_trade_no, result.total_fee
    if await repo.mark_paid(no, fee, values, after_close=False) is not None:
        return Verdict.PAID
    if await repo.mark_paid(no, fee, values, after_close=True) is not None:
        logger.warning("order %s was paid after we closed it; flagged for review", no)
        return Verdict.PAID_AFTER_CLOSE
    return await _explain_unpaid(repo, result)


async def _explain_unpaid(repo: PaymentRepo, result: PaymentResult) -> Verdict:
    state = await repo.order_state(result.out_trade_no)
    if state is None:
        logger.error("payment for unknown order %s", result.out_trade_no)
        return Verdict.UNKNOWN_ORDER
    if state.total_fee != result.total_fee:
        await repo.flag_review(state.id, ReviewReason.AMOUNT_MISMATCH.value)
        logger.error(
            "AMOUNT MISMATCH on order %s: WeChat reports %s fen, we expect %s fen",
            result.out_trade_no,
            result.total_fee,
            state.total_fee,
        )
        return Verdict.AMOUNT_MISMATCH
    if state.transaction_id == result.transaction_id:
        return Verdict.DUPLICATE
    await repo.flag_review(state.id, ReviewReason.TRANSACTION_CONFLICT.value)
    logger.error("order %s already paid by another transaction", result.out_trade_no)
    return Verdict.TRANSACTION_CONFLICT


async def _flag(repo: PaymentRepo, out_trade_no: str, reason: ReviewReason) -> None:
    state = await repo.order_state(out_trade_no)
    if state is not None:
        await repo.flag_review(state.id, reason.value)


def _audit_row(verdict: Verdict, result: PaymentResult, audit: AuditRecord) -> AuditRow:
    return AuditRow(
        received_at=audit.received_at,
        verdict=verdict.value,
        raw=audit.raw,
        out_trade_no=result.out_trade_no,
        transaction_id=result.transaction_id,
        total_fee=result.total_fee,
    )
