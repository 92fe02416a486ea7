"""Refund rules.

- Only the merchant asks for refunds (the admin API). Only a paid order can be refunded, and
  its refunds together never exceed what was paid: each refund reserves its amount on the
  order with one guarded UPDATE, in the transaction that stores the refund.
- Three steps, as for create-order: commit the refund (``PENDING``), call WeChat with no
  transaction open, commit the outcome. Acceptance (``PROCESSING``) is not yet money returned;
  the refund notify or a refund query says how it ended (PROTOCOL.md §6.3-6.5).
- The same ``out_refund_no`` with the same amounts refunds at most once (§6.3). A refund whose
  request may or may not have arrived is first looked up at WeChat, and sent again only if
  WeChat has never seen it, so it can be refused as ``FAILED`` only when no money can move.
- An outcome that returns nothing to the user (``FAILED``, ``REFUNDCLOSE``) gives its amount
  back to the order, once: in the transaction of the guarded status change.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.errors import Conflict, upstream_rejected
from app.orders.numbers import new_out_trade_no
from app.orders.service import IdempotencyKeyReused, OrderNotFound
from app.orders.states import OrderStatus, ReviewReason
from app.payments.repository import AuditRow, PaymentRepository
from app.payments.service import AuditRecord
from app.refunds.repository import (
    REFUNDABLE,
    DuplicateRefund,
    RefundableOrder,
    RefundRecord,
    RefundRepository,
)
from app.refunds.states import OPEN, RELEASES_AMOUNT, RefundStatus
from app.wechat.client import WeChatPayClient
from app.wechat.errors import WeChatRejected, WeChatUnavailable
from app.wechat.models import RefundNotifyInfo, RefundQueryRequest, RefundRequest
from app.wechat.timefmt import from_refund_time

logger = logging.getLogger(__name__)


class RefundVerdict(StrEnum):
    """What a refund notify came to; recorded beside the notify in ``payment_notifies``."""

    APPLIED = "REFUND_APPLIED"
    DUPLICATE = "REFUND_DUPLICATE"
    # A legacy refund_status (FAIL, NOTSURE) that decides nothing; the sweep asks later.
    UNDECIDED = "REFUND_UNDECIDED"
    UNKNOWN = "REFUND_UNKNOWN"
    MISMATCH = "REFUND_MISMATCH"
    CONFLICT = "REFUND_CONFLICT"
    REFUSED = "REFUND_REFUSED"


# Verdicts after which WeChat may stop sending: the outcome is committed or decides nothing.
REFUND_ACKNOWLEDGED = frozenset(
    {RefundVerdict.APPLIED, RefundVerdict.DUPLICATE, RefundVerdict.UNDECIDED}
)


class OrderNotRefundable(Conflict):
    code = "ORDER_NOT_REFUNDABLE"


class RefundExceedsPaid(Conflict):
    code = "REFUND_EXCEEDS_PAID"


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """What WeChat says about one refund, from a reply, a query or a notify."""

    status: RefundStatus
    refund_id: str | None = None
    success_time: dt.datetime | None = None


class RefundService:
    def __init__(self, engine: AsyncEngine, settings: Settings, pay: WeChatPayClient) -> None:
        self._engine = engine
        self._settings = settings
        self._pay = pay

    async def request_refund(
        self, out_trade_no: str, refund_fee: int, reason: str | None, idempotency_key: str | None
    ) -> RefundRecord:
        """Refund part or all of a paid order; a repeated ``idempotency_key`` returns the first
        refund (and sends it again if WeChat has not accepted it yet)."""
        if idempotency_key:
            first = await self._by_key(out_trade_no, idempotency_key)
            if first is not None:
                return await self._replay(first, refund_fee)
        try:
            refund, order = await self._store(out_trade_no, refund_fee, reason, idempotency_key)
        except DuplicateRefund:
            # A concurrent request with the same key stored its refund first.
            first = await self._by_key(out_trade_no, idempotency_key or "")
            if first is None:
                raise
            return await self._replay(first, refund_fee)
        return await self._send(refund, order)

    async def refunds_of(self, out_trade_no: str) -> list[RefundRecord]:
        async with self._engine.connect() as conn:
            repo = RefundRepository(conn)
            order = await repo.order(out_trade_no)
            if order is None:
                raise OrderNotFound()
            return await repo.of_order(order.id)

    async def settle(self, out_refund_no: str) -> RefundRecord:
        """Learn an open refund's fate from WeChat and apply it; a ``PENDING`` refund WeChat has
        never seen is sent (again)."""
        refund, order = await self._load(out_refund_no)
        if refund.status not in OPEN:
            return refund
        try:
            outcome = await self._query(refund)
        except WeChatRejected as exc:
            if exc.err_code != "REFUNDNOTEXIST" or refund.status != RefundStatus.PENDING:
                raise
            return await self._send(refund, order)
        if outcome is not None:
            await self.apply(refund.out_refund_no, outcome)
        return (await self._load(out_refund_no))[0]

    async def apply(self, out_refund_no: str, outcome: RefundOutcome) -> bool:
        """Apply WeChat's word on a refund through the guarded moves; False if it changed
        nothing (already applied, or contradicted by what we hold)."""
        async with self._engine.begin() as conn:
            repo = RefundRepository(conn)
            refund = await repo.by_out_refund_no(out_refund_no)
            assert refund is not None
            return await apply_outcome(repo, refund, outcome)

    async def apply_notify(self, info: RefundNotifyInfo, audit: AuditRecord) -> RefundVerdict:
        """Check a decrypted refund notify against our records and apply it; the verdict and
        the notify's audit row commit with its effect."""
        async with self._engine.begin() as conn:
            verdict = await _judge_notify(RefundRepository(conn), info)
            await PaymentRepository(conn).audit(
                AuditRow(
                    received_at=audit.received_at,
                    verdict=verdict.value,
                    raw=audit.raw,
                    detail=f"{info.out_refund_no} {info.refund_status.value}",
                    out_trade_no=info.out_trade_no,
                    transaction_id=info.transaction_id,
                    total_fee=info.total_fee,
                )
            )
        return verdict

    async def record_refused(self, audit: AuditRecord, reason: str) -> None:
        """Audit a refund notify that never reached a refund (unreadable, not ours)."""
        row = AuditRow(audit.received_at, RefundVerdict.REFUSED.value, audit.raw, reason)
        async with self._engine.begin() as conn:
            await PaymentRepository(conn).audit(row)

    async def _store(
        self, out_trade_no: str, refund_fee: int, reason: str | None, key: str | None
    ) -> tuple[RefundRecord, RefundableOrder]:
        async with self._engine.begin() as conn:
            repo = RefundRepository(conn)
            order = await repo.order(out_trade_no)
            if order is None:
                raise OrderNotFound()
            # The row before the reservation: a concurrent request with the same key waits on
            # this insert and then replays it, instead of holding a reservation meanwhile that
            # could turn a different, valid refund away.
            refund = await repo.add(
                {
                    "out_refund_no": "R" + new_out_trade_no(),
                    "order_id": order.id,
                    "refund_fee": refund_fee,
                    "reason": reason,
                    "idempotency_key": key,
                }
            )
            if not await repo.reserve(order.id, refund_fee):
                raise _not_refundable(await repo.order_by_id(order.id), refund_fee)
            return refund, order

    async def _by_key(self, out_trade_no: str, key: str) -> RefundRecord | None:
        async with self._engine.connect() as conn:
            repo = RefundRepository(conn)
            order = await repo.order(out_trade_no)
            return None if order is None else await repo.by_key(order.id, key)

    async def _replay(self, first: RefundRecord, refund_fee: int) -> RefundRecord:
        if first.refund_fee != refund_fee:
            raise IdempotencyKeyReused("This Idempotency-Key was already used for another refund.")
        return await self.settle(first.out_refund_no)

    async def _send(self, refund: RefundRecord, order: RefundableOrder) -> RefundRecord:
        request = RefundRequest(
            out_trade_no=order.out_trade_no,
            out_refund_no=refund.out_refund_no,
            total_fee=order.total_fee,
            refund_fee=refund.refund_fee,
            refund_desc=refund.reason,
            notify_url=self._settings.refund_notify_address,
        )
        try:
            response = await self._pay.refund(request)
        except WeChatRejected as exc:
            # Sent only when WeChat has never seen this out_refund_no: a refusal moves no money.
            failed = RefundOutcome(RefundStatus.FAILED)
            await self._apply_with_error(refund, failed, f"{exc.err_code}: {exc.reason}")
            raise upstream_rejected(exc) from exc
        except WeChatUnavailable as exc:
            # WeChat may or may not have it: keep it PENDING; the sweep asks, then sends again.
            logger.warning("refund %s not confirmed: %s", refund.out_refund_no, exc.message)
            await self._apply_with_error(refund, None, exc.message)
            return (await self._load(refund.out_refund_no))[0]
        accepted = RefundOutcome(RefundStatus.PROCESSING, refund_id=response.refund_id)
        await self.apply(refund.out_refund_no, accepted)
        return (await self._load(refund.out_refund_no))[0]

    async def _apply_with_error(
        self, refund: RefundRecord, outcome: RefundOutcome | None, error: str
    ) -> None:
        async with self._engine.begin() as conn:
            repo = RefundRepository(conn)
            await repo.note_error(refund.out_refund_no, error)
            if outcome is not None:
                await apply_outcome(repo, refund, outcome)

    async def _query(self, refund: RefundRecord) -> RefundOutcome | None:
        result = await self._pay.refund_query(
            RefundQueryRequest(out_refund_no=refund.out_refund_no)
        )
        for record in result.refunds:
            if record.out_refund_no == refund.out_refund_no:
                return outcome_of(
                    record.refund_status.value, record.refund_id, record.refund_success_time
                )
        return None

    async def _load(self, out_refund_no: str) -> tuple[RefundRecord, RefundableOrder]:
        async with self._engine.connect() as conn:
            repo = RefundRepository(conn)
            refund = await repo.by_out_refund_no(out_refund_no)
            assert refund is not None  # refunds are never deleted
            return refund, await repo.order_by_id(refund.order_id)


def outcome_of(
    status: str, refund_id: str | None, success_time: str | None
) -> RefundOutcome | None:
    """WeChat's ``refund_status`` as an outcome; None for the legacy values that decide
    nothing (``FAIL``, ``NOTSURE``: left open for the next query)."""
    try:
        target = RefundStatus(status)
    except ValueError:
        return None
    moment = None
    if success_time:
        try:
            moment = from_refund_time(success_time)
        except ValueError:
            moment = None  # a malformed time is not a reason to lose a verified outcome
    return RefundOutcome(target, refund_id, moment)


async def apply_outcome(
    repo: RefundRepository, refund: RefundRecord, outcome: RefundOutcome
) -> bool:
    """The guarded move and what comes with it, in the caller's transaction."""
    values = {"refund_id": outcome.refund_id, "success_time": outcome.success_time}
    moved = await repo.move(
        refund.out_refund_no,
        outcome.status,
        **{name: value for name, value in values.items() if value is not None},
    )
    if moved is None:
        return False
    if outcome.status in RELEASES_AMOUNT:
        await repo.release(moved.order_id, moved.refund_fee)
    else:
        # WeChat reports the order as REFUND once it accepts a refund (§6.1); so do we.
        await repo.mark_order_refunded(moved.order_id)
    if outcome.status is RefundStatus.CHANGE:
        logger.error("refund %s could not reach the user; finish it on the merchant platform",
                     refund.out_refund_no)  # fmt: skip
        await repo.flag_order(moved.order_id, ReviewReason.REFUND_CHANGE)
    return True


async def _judge_notify(repo: RefundRepository, info: RefundNotifyInfo) -> RefundVerdict:
    refund = await repo.by_out_refund_no(info.out_refund_no)
    if refund is None:
        logger.error("refund notify for unknown refund %s", info.out_refund_no)
        return RefundVerdict.UNKNOWN
    order = await repo.order_by_id(refund.order_id)
    ours = (order.out_trade_no, order.total_fee, refund.refund_fee)
    if ours != (info.out_trade_no, info.total_fee, info.refund_fee):
        logger.error("REFUND MISMATCH on %s: WeChat reports %s", info.out_refund_no, info.raw)
        await repo.flag_order(order.id, ReviewReason.REFUND_CONFLICT)
        return RefundVerdict.MISMATCH
    outcome = outcome_of(info.refund_status.value, info.refund_id, info.success_time)
    if outcome is None:
        return RefundVerdict.UNDECIDED
    if await apply_outcome(repo, refund, outcome):
        return RefundVerdict.APPLIED
    # Read again: a racing duplicate may have committed the same move since we first looked.
    current = await repo.by_out_refund_no(info.out_refund_no)
    if current is not None and current.status == outcome.status:
        return RefundVerdict.DUPLICATE
    logger.error("refund %s: WeChat reports %s, we hold %s", info.out_refund_no,
                 outcome.status.value, current and current.status)  # fmt: skip
    await repo.flag_order(order.id, ReviewReason.REFUND_CONFLICT)
    return RefundVerdict.CONFLICT


def _not_refundable(order: RefundableOrder, refund_fee: int) -> Exception:
    if order.status not in REFUNDABLE:
        return OrderNotRefundable(
            f"The order is {order.status}; only a paid order ({OrderStatus.SUCCESS.value}) can "
            "be refunded."
        )
    left = order.total_fee - order.refunded_fee
    return RefundExceedsPaid(
        f"Only {left} fen of this order can still be refunded (asked for {refund_fee})."
    )
