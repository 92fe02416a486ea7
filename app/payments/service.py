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
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from app.gateway import PaymentResult
from app.orders.outbox import flag_and_record, pay_and_record
from app.orders.repository import DuplicateTransaction, Folded, PaymentFacts, PaymentView
from app.orders.states import PAID, ReviewReason
from app.payments.repository import AuditRow, audit_of_paid, audit_params

if TYPE_CHECKING:
    from app.uow import Database, UnitOfWork

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
class AuditRecord:
    """How the message that carried a result is recorded beside its effect."""

    raw: str
    received_at: dt.datetime


class PaymentService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def apply_paid(self, result: PaymentResult, audit: AuditRecord | None = None) -> Verdict:
        """Apply a successful payment once; the audit row commits with its effect."""
        # Where writes are folded (PostgreSQL), the usual notify is paid by one statement;
        # whatever else it is (a duplicate, a closed order, a mismatch) then goes the
        # transaction's way, which needs no retry of that payment. Where they are not, asking
        # would only cost a connection per notify.
        try:
            folded, found = Folded.NOT_FOLDED, None
            if audit is not None and self._db.fold_writes:
                folded, found = await self._folded(result, audit)
            if folded is Folded.PAID:
                return Verdict.PAID
            if audit is not None and _repeats(found, result):
                async with self._db.statement() as tx:
                    await tx.audit.record(_audit_row(Verdict.DUPLICATE, result, audit))
                return Verdict.DUPLICATE
            async with self._db.transaction() as tx:
                verdict = await _settle(tx, result, tried_unpaid=folded is Folded.NOT_PAID)
                if audit is not None:
                    await tx.audit.record(_audit_row(verdict, result, audit))
        except DuplicateTransaction:
            # Another order already holds this WeChat transaction. Money and records
            # disagree; a human must look.
            logger.error("transaction %s already belongs to another order", result.transaction_id)
            verdict = Verdict.TRANSACTION_CONFLICT
            async with self._db.transaction() as tx:
                await _flag(tx, result.out_trade_no, ReviewReason.TRANSACTION_CONFLICT)
                if audit is not None:
                    await tx.audit.record(_audit_row(verdict, result, audit))
        return verdict

    async def _folded(
        self, result: PaymentResult, audit: AuditRecord
    ) -> tuple[Folded, PaymentView | None]:
        """An unpaid order paid by one statement that commits on its own: the payment, its
        events and its audit row, one round trip where BEGIN, the payment, the audit INSERT
        and COMMIT took four (PostgreSQL; elsewhere nothing is tried). When it does not pay,
        the order as that statement found it."""
        params = audit_params(audit.received_at, audit.raw)
        async with self._db.statement() as tx:
            return await tx.orders.pay_in_one_statement(
                result.out_trade_no, result.total_fee, _facts(result), (audit_of_paid,), params
            )

    async def record(
        self, verdict: Verdict, audit: AuditRecord, detail: str, out_trade_no: str | None = None
    ) -> None:
        """Audit a notify that changes no order (refused, or a failed payment)."""
        row = AuditRow(audit.received_at, verdict.value, audit.raw, detail, out_trade_no)
        async with self._db.statement() as tx:
            await tx.audit.record(row)


async def _settle(tx: UnitOfWork, result: PaymentResult, *, tried_unpaid: bool) -> Verdict:
    """``tried_unpaid``: the payment of an unpaid order was just tried, and did not move it."""
    facts, no, fee = _facts(result), result.out_trade_no, result.total_fee
    if not tried_unpaid and await pay_and_record(tx, no, fee, facts, after_close=False) is not None:
        return Verdict.PAID
    if await pay_and_record(tx, no, fee, facts, after_close=True) is not None:
        logger.warning("order %s was paid after we closed it; flagged for review", no)
        return Verdict.PAID_AFTER_CLOSE
    return await _explain_unpaid(tx, result)


def _repeats(found: PaymentView | None, result: PaymentResult) -> bool:
    """Whether the order was found paid, by this very transaction, for this amount: WeChat
    repeating itself, the usual reason a folded payment does not move the order. A paid
    order stays paid (SUCCESS, then REFUND) and its transaction id, written when it is paid,
    never changes: the answer cannot change, so it needs no transaction, and the duplicate
    is audited in one more statement (two round trips where the transaction took six).
    Anything else (a closed order, another amount, another transaction, an order found
    unpaid that a concurrent notify has just paid) goes the transaction's way."""
    return (
        found is not None
        and found.status in PAID
        and found.transaction_id == result.transaction_id
        and found.total_fee == result.total_fee
    )


def _facts(result: PaymentResult) -> PaymentFacts:
    return PaymentFacts(result.transaction_id, result.paid_at, result.cash_fee, result.bank_type)


async def _explain_unpaid(tx: UnitOfWork, result: PaymentResult) -> Verdict:
    state = await tx.orders.payment_view(result.out_trade_no)
    if state is None:
        logger.error("payment for unknown order %s", result.out_trade_no)
        return Verdict.UNKNOWN_ORDER
    if state.total_fee != result.total_fee:
        await flag_and_record(tx, state.id, ReviewReason.AMOUNT_MISMATCH)
        logger.error(
            "AMOUNT MISMATCH on order %s: WeChat reports %s fen, we expect %s fen",
            result.out_trade_no,
            result.total_fee,
            state.total_fee,
        )
        return Verdict.AMOUNT_MISMATCH
    if state.transaction_id == result.transaction_id:
        return Verdict.DUPLICATE
    await flag_and_record(tx, state.id, ReviewReason.TRANSACTION_CONFLICT)
    logger.error("order %s already paid by another transaction", result.out_trade_no)
    return Verdict.TRANSACTION_CONFLICT


async def _flag(tx: UnitOfWork, out_trade_no: str, reason: ReviewReason) -> None:
    state = await tx.orders.payment_view(out_trade_no)
    if state is not None:
        await flag_and_record(tx, state.id, reason)


def _audit_row(verdict: Verdict, result: PaymentResult, audit: AuditRecord) -> AuditRow:
    return AuditRow(
        received_at=audit.received_at,
        verdict=verdict.value,
        raw=audit.raw,
        out_trade_no=result.out_trade_no,
        transaction_id=result.transaction_id,
        total_fee=result.total_fee,
    )
