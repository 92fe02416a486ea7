"""Refund rules.

- Only the merchant asks for refunds (the admin API). Only a paid order can be refunded, and
  its refunds together never exceed what was paid: each refund reserves its amount on the
  order with one guarded UPDATE, in the transaction that stores the refund.
- Three steps, as for create-order: commit the refund (``PENDING``), call WeChat with no
  transaction open, commit the outcome. Acceptance (``PROCESSING``) is not yet money returned;
  the refund notify or a refund query says how it ended (PROTOCOL.md §6.3-6.5).
- The same ``out_refund_no`` with the same amounts refunds at most once (§6.3). So a refund
  whose fate is unknown is looked up at WeChat and sent again only if WeChat has never seen it,
  and it becomes ``FAILED`` only when WeChat refuses it *and* does not have it: the client
  resends after a timeout, so a refusal can follow an attempt WeChat took.
- Refusals that mean "later" (§6.3: ``NOTENOUGH``, ``FREQUENCY_LIMITED``,
  ``INVALID_REQ_TOO_MUCH``) leave the refund ``PENDING``, to be sent again by the sweep.
- Whoever talks to WeChat about a refund holds its lease (``lease_until``, ``lease_token``):
  the request, a replay with the same ``Idempotency-Key``, the sweep. It is renewed before every
  call to WeChat, and whoever finds it gone stops: never two at once.
- A refund that was just handled is not handled again within ``RESEND_AFTER``, replays
  included, so a client repeating itself cannot hammer WeChat (6 qps for failing requests).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from enum import Enum
from typing import TYPE_CHECKING

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, UpstreamRejected
from app.orders.numbers import new_out_trade_no
from app.orders.repository import OrderRecord
from app.orders.service import IdempotencyKeyReused, OrderNotFound
from app.orders.states import REFUNDABLE, OrderStatus
from app.refunds.outcomes import RefundOutcome, apply_outcome, outcome_of
from app.refunds.repository import DuplicateRefund, RefundRecord
from app.refunds.states import OPEN, RefundStatus
from app.wechat.client import WeChatPayClient
from app.wechat.errors import WeChatRejected, WeChatUnavailable
from app.wechat.models import RefundQueryRequest, RefundRequest

if TYPE_CHECKING:
    from app.uow import Database

logger = logging.getLogger(__name__)

RESEND_AFTER = dt.timedelta(minutes=1)
RETRY_LATER = frozenset({"NOTENOUGH", "FREQUENCY_LIMITED", "INVALID_REQ_TOO_MUCH"})


class OrderNotRefundable(Conflict):
    code = "ORDER_NOT_REFUNDABLE"


class RefundExceedsPaid(Conflict):
    code = "REFUND_EXCEEDS_PAID"


class RefundRefused(UpstreamRejected):
    """WeChat refused the refund and does not have it; no money moved."""


class _LeaseLost(Exception):
    """Our lease on a refund ran out and someone else took it: stop talking to WeChat."""


class _Known(Enum):
    """What a refund query told us."""

    ABSENT = "WeChat has never seen the refund"
    APPLIED = "WeChat's status was applied"
    UNDECIDED = "WeChat has it, with a legacy status that decides nothing (FAIL, NOTSURE)"
    UNREACHABLE = "the query failed; nothing may be concluded"


def lease_for(settings: Settings) -> dt.timedelta:
    """Longer than one call to WeChat (all its attempts, timeouts and backoff), with a margin:
    the holder renews the lease before each call (a refund may need a query, a send and
    another query)."""
    per_call = settings.wechat_max_attempts * (
        settings.http_connect_timeout + settings.http_read_timeout + 2
    )
    return dt.timedelta(seconds=max(60.0, per_call + 30))


class RefundService:
    def __init__(self, db: Database, settings: Settings, pay: WeChatPayClient) -> None:
        self._db = db
        self._settings = settings
        self._pay = pay
        self._lease = lease_for(settings)

    async def request_refund(
        self, out_trade_no: str, refund_fee: int, reason: str | None, idempotency_key: str | None
    ) -> RefundRecord:
        """Refund part or all of a paid order. A repeated ``idempotency_key`` answers with the
        first refund (and takes it further if WeChat has not settled it). ``PENDING`` in the
        answer means WeChat could not be asked now: the sweep carries on."""
        idempotency_key = idempotency_key or None  # an empty header is no key
        if idempotency_key:
            first = await self._by_key(out_trade_no, idempotency_key)
            if first is not None:
                return await self._replay(first, refund_fee)
        try:
            token = secrets.token_hex(16)
            refund, order = await self._store(
                out_trade_no, refund_fee, reason, idempotency_key, token
            )
        except DuplicateRefund:
            # A concurrent request with the same key stored its refund first.
            first = await self._by_key(out_trade_no, idempotency_key or "")
            if first is None:
                raise
            return await self._replay(first, refund_fee)
        return _answer(await self._drive(refund, order, token, sent_before=False))

    async def refunds_of(self, out_trade_no: str) -> list[RefundRecord]:
        async with self._db.transaction() as tx:
            order = await tx.orders.by_out_trade_no(out_trade_no)
            if order is None:
                raise OrderNotFound()
            return await tx.refunds.of_order(order.id)

    async def settle(self, out_refund_no: str) -> RefundRecord | None:
        """Take an open refund as far as WeChat allows now; None if someone else is at it."""
        token = secrets.token_hex(16)
        async with self._db.statement() as tx:
            if not await tx.refunds.take_lease(out_refund_no, token, self._lease):
                return None
        refund, order = await self._load(out_refund_no)
        return await self._drive(refund, order, token, sent_before=True)

    async def _replay(self, first: RefundRecord, refund_fee: int) -> RefundRecord:
        if first.refund_fee != refund_fee:
            raise IdempotencyKeyReused("This Idempotency-Key was already used for another refund.")
        if first.status not in OPEN or utcnow() - first.updated_at < RESEND_AFTER:
            return _answer(first)
        settled = await self.settle(first.out_refund_no)
        return _answer(settled or (await self._load(first.out_refund_no))[0])

    async def _drive(
        self, refund: RefundRecord, order: OrderRecord, token: str, *, sent_before: bool
    ) -> RefundRecord:
        """Ask WeChat (if it may have the refund already), send it unless WeChat has settled
        it, record what comes back. Holds the lease throughout and ends it."""
        try:
            if sent_before or refund.status != RefundStatus.PENDING:
                known = await self._ask(refund, token)
                if refund.status != RefundStatus.PENDING or known in _SETTLED_OR_UNKNOWN:
                    return (await self._load(refund.out_refund_no))[0]
            # Never seen, or a legacy "not sure": sending the same out_refund_no again is safe.
            await self._send(refund, order, token)
        except _LeaseLost:
            logger.warning("refund %s: lease lost; another worker carries on", refund.out_refund_no)
        finally:
            async with self._db.statement() as tx:
                await tx.refunds.release_lease(refund.out_refund_no, token)
        return (await self._load(refund.out_refund_no))[0]

    async def _ask(self, refund: RefundRecord, token: str) -> _Known:
        """Apply what WeChat knows of the refund."""
        await self._hold(refund, token)
        try:
            outcome = await self._query(refund)
        except (WeChatUnavailable, WeChatRejected) as exc:
            await self._note_error(refund, str(exc))
            return _Known.UNREACHABLE
        if outcome is None:
            return _Known.ABSENT
        if isinstance(outcome, _Known):
            return outcome
        await self._record(refund, outcome)
        return _Known.APPLIED

    async def _hold(self, refund: RefundRecord, token: str) -> None:
        async with self._db.statement() as tx:
            if not await tx.refunds.renew_lease(refund.out_refund_no, token, self._lease):
                raise _LeaseLost()

    async def _send(self, refund: RefundRecord, order: OrderRecord, token: str) -> None:
        await self._hold(refund, token)
        try:
            response = await self._pay.refund(self._refund_request(refund, order))
        except WeChatUnavailable as exc:
            # WeChat may or may not have it: it stays PENDING; the sweep asks, then sends.
            logger.warning("refund %s not confirmed: %s", refund.out_refund_no, exc.message)
            await self._note_error(refund, exc.message)
            return
        except WeChatRejected as exc:
            await self._refused(refund, exc, token)
            return
        await self._record(refund, RefundOutcome(RefundStatus.PROCESSING, response.refund_id))

    async def _refused(self, refund: RefundRecord, exc: WeChatRejected, token: str) -> None:
        reason = f"{exc.err_code}: {exc.reason}"
        if exc.err_code in RETRY_LATER:
            await self._note_error(refund, reason)
            return
        if await self._ask(refund, token) is not _Known.ABSENT:
            await self._note_error(refund, reason)
            return  # WeChat has it after all (an earlier attempt), or cannot say now
        logger.warning("refund %s refused by WeChat: %s", refund.out_refund_no, reason)
        await self._record(refund, RefundOutcome(RefundStatus.FAILED), error=reason)

    def _refund_request(self, refund: RefundRecord, order: OrderRecord) -> RefundRequest:
        return RefundRequest(
            out_trade_no=order.out_trade_no,
            out_refund_no=refund.out_refund_no,
            total_fee=order.total_fee,
            refund_fee=refund.refund_fee,
            refund_desc=refund.reason,
            notify_url=self._settings.refund_notify_address,
        )

    async def _query(self, refund: RefundRecord) -> RefundOutcome | _Known | None:
        """WeChat's outcome for the refund; None if WeChat has never seen it."""
        try:
            result = await self._pay.refund_query(
                RefundQueryRequest(out_refund_no=refund.out_refund_no)
            )
        except WeChatRejected as exc:
            if exc.err_code == "REFUNDNOTEXIST":
                return None
            raise
        for item in result.refunds:
            if item.out_refund_no == refund.out_refund_no:
                status, success_time = item.refund_status.value, item.refund_success_time
                return outcome_of(status, item.refund_id, success_time) or _Known.UNDECIDED
        return None

    async def _record(
        self, refund: RefundRecord, outcome: RefundOutcome, error: str | None = None
    ) -> None:
        async with self._db.transaction() as tx:
            if error is not None:
                await tx.refunds.note_error(refund.out_refund_no, error)
            await apply_outcome(tx, refund, outcome)

    async def _note_error(self, refund: RefundRecord, error: str) -> None:
        async with self._db.statement() as tx:
            await tx.refunds.note_error(refund.out_refund_no, error)

    async def _store(
        self, out_trade_no: str, refund_fee: int, reason: str | None, key: str | None, token: str
    ) -> tuple[RefundRecord, OrderRecord]:
        async with self._db.transaction() as tx:
            order = await tx.orders.by_out_trade_no(out_trade_no)
            if order is None:
                raise OrderNotFound()
            # The row before the reservation: a concurrent request with the same key waits on
            # this insert and then replays it, instead of holding a reservation meanwhile that
            # could turn a different, valid refund away. It is born leased to this request.
            refund = await tx.refunds.add(
                {
                    "out_refund_no": "R" + new_out_trade_no(),
                    "order_id": order.id,
                    "refund_fee": refund_fee,
                    "reason": reason,
                    "idempotency_key": key,
                },
                token,
                self._lease,
            )
            if not await tx.orders.reserve_refund(order.id, refund_fee):
                raise _not_refundable(await tx.orders.by_id(order.id) or order, refund_fee)
            return refund, order

    async def _by_key(self, out_trade_no: str, key: str) -> RefundRecord | None:
        async with self._db.transaction() as tx:
            order = await tx.orders.by_out_trade_no(out_trade_no)
            return None if order is None else await tx.refunds.by_key(order.id, key)

    async def _load(self, out_refund_no: str) -> tuple[RefundRecord, OrderRecord]:
        async with self._db.transaction() as tx:
            refund = await tx.refunds.by_out_refund_no(out_refund_no)
            order = None if refund is None else await tx.orders.by_id(refund.order_id)
        if refund is None or order is None:
            raise LookupError(f"refund {out_refund_no} vanished")  # never deleted
        return refund, order


_SETTLED_OR_UNKNOWN = frozenset({_Known.APPLIED, _Known.UNREACHABLE})


def _answer(refund: RefundRecord) -> RefundRecord:
    """The same answer for a request and for its replays: a refused refund is an error."""
    if refund.status == RefundStatus.FAILED:
        raise RefundRefused(f"WeChat refused the refund: {refund.error}")
    return refund


def _not_refundable(order: OrderRecord, refund_fee: int) -> Exception:
    if order.status not in REFUNDABLE:
        return OrderNotRefundable(
            f"The order is {order.status}; only a paid order ({OrderStatus.SUCCESS.value}) can "
            "be refunded."
        )
    left = order.total_fee - order.refunded_fee
    return RefundExceedsPaid(
        f"Only {left} fen of this order can still be refunded (asked for {refund_fee})."
    )
