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
- What to do next about a refund is decided by ``app.refunds.decisions.next_action`` (a pure
  function with a table test); this service only performs each step.
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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, UpstreamRejected
from app.gateway import (
    Gateways,
    PaymentGateway,
    RefundOrder,
    RefundOutcome,
    WeChatRejected,
    WeChatUnavailable,
)
from app.orders.numbers import new_out_trade_no
from app.orders.repository import OrderRecord
from app.orders.service import IdempotencyKeyReused, OrderNotFound
from app.orders.states import REFUNDABLE, OrderStatus
from app.refunds.decisions import Action, Do, Heard, Pass, Said, next_action
from app.refunds.outcomes import apply_outcome
from app.refunds.repository import DuplicateRefund, RefundRecord
from app.refunds.states import OPEN, RefundStatus

if TYPE_CHECKING:
    from app.uow import Database

logger = logging.getLogger(__name__)

RESEND_AFTER = dt.timedelta(minutes=1)
# A pass makes at most three calls (query, send, query) and then concludes
# (tests/refunds/test_decisions.py).
_MAX_STEPS = 4


class OrderNotRefundable(Conflict):
    code = "ORDER_NOT_REFUNDABLE"


class RefundExceedsPaid(Conflict):
    code = "REFUND_EXCEEDS_PAID"


class RefundRefused(UpstreamRejected):
    """WeChat refused the refund and does not have it; no money moved."""


class _LeaseLost(Exception):
    """Our lease on a refund ran out and someone else took it: stop talking to WeChat."""


def lease_for(settings: Settings) -> dt.timedelta:
    """Longer than one call to WeChat (all its attempts, timeouts and backoff), with a margin:
    the holder renews the lease before each call (a refund may need a query, a send and
    another query)."""
    per_call = settings.wechat_max_attempts * (
        settings.http_connect_timeout + settings.http_read_timeout + 2
    )
    return dt.timedelta(seconds=max(60.0, per_call + 30))


class _Lease:
    """Our hold on one refund while we talk to WeChat about it."""

    def __init__(self, db: Database, out_refund_no: str, token: str, length: dt.timedelta):
        self._db, self._no, self._token, self._length = db, out_refund_no, token, length

    async def renew(self) -> None:
        """Before each call to WeChat; ``_LeaseLost`` if it ran out and someone took it."""
        async with self._db.statement() as tx:
            if not await tx.refunds.renew_lease(self._no, self._token, self._length):
                raise _LeaseLost()

    async def release(self) -> None:
        async with self._db.statement() as tx:
            await tx.refunds.release_lease(self._no, self._token)


class RefundService:
    def __init__(self, db: Database, settings: Settings, gateways: Gateways) -> None:
        self._db = db
        self._settings = settings
        self._gateways = gateways
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
        token = secrets.token_hex(16)
        try:
            refund, order = await self._store(
                out_trade_no, refund_fee, reason, idempotency_key, token
            )
        except DuplicateRefund:
            # A concurrent request with the same key stored its refund first.
            first = await self._by_key(out_trade_no, idempotency_key or "")
            if first is None:
                raise
            return await self._replay(first, refund_fee)
        # The refund was born leased to this request.
        async with self._held(refund.out_refund_no, token) as lease:
            await self._drive(refund, order, lease, sent_before=False)
        return _answer(await self._reload(refund.out_refund_no))

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
        async with self._held(out_refund_no, token) as lease:
            refund, order = await self._load(out_refund_no)
            await self._drive(refund, order, lease, sent_before=True)
        return await self._reload(out_refund_no)

    @asynccontextmanager
    async def _held(self, out_refund_no: str, token: str) -> AsyncIterator[_Lease]:
        """A lease we hold, ended when the block ends (the sweep's clock restarts then)."""
        lease = _Lease(self._db, out_refund_no, token, self._lease)
        try:
            yield lease
        except _LeaseLost:
            logger.warning("refund %s: lease lost; another worker carries on", out_refund_no)
        finally:
            await lease.release()

    async def _replay(self, first: RefundRecord, refund_fee: int) -> RefundRecord:
        if first.refund_fee != refund_fee:
            raise IdempotencyKeyReused("This Idempotency-Key was already used for another refund.")
        if first.status not in OPEN or utcnow() - first.updated_at < RESEND_AFTER:
            return _answer(first)
        settled = await self.settle(first.out_refund_no)
        return _answer(settled or await self._reload(first.out_refund_no))

    async def _drive(
        self, refund: RefundRecord, order: OrderRecord, lease: _Lease, *, sent_before: bool
    ) -> None:
        """Perform the steps ``next_action`` decides, until one ends the pass."""
        gateway = self._gateways.of(order.api_version)
        state = Pass(RefundStatus(refund.status), sent_before)
        said = Said(Heard.NOTHING)
        for _ in range(_MAX_STEPS):
            action = next_action(state, said)
            if action.do is Do.ASK:
                await lease.renew()
                said = await self._ask(gateway, refund)
            elif action.do is Do.SEND:
                await lease.renew()
                said = await self._send(gateway, refund, order)
                if said.heard is Heard.REFUSED:
                    state = Pass(state.status, state.sent_before, said.text)
            else:
                await self._conclude(refund, action)
                return

    async def _ask(self, gateway: PaymentGateway, refund: RefundRecord) -> Said:
        try:
            report = await gateway.refund_query(refund.out_refund_no)
        except (WeChatUnavailable, WeChatRejected) as exc:
            return Said(Heard.UNREACHABLE, text=str(exc))
        if report is None:
            return Said(Heard.ABSENT)
        if report.outcome is None:
            return Said(Heard.UNDECIDED)
        return Said(Heard.SETTLED, report.outcome)

    async def _send(
        self, gateway: PaymentGateway, refund: RefundRecord, order: OrderRecord
    ) -> Said:
        try:
            refund_id = await gateway.refund(_refund_order(refund, order))
        except WeChatUnavailable as exc:
            # WeChat may or may not have it: it stays PENDING; the sweep asks, then sends.
            logger.warning("refund %s not confirmed: %s", refund.out_refund_no, exc.message)
            return Said(Heard.NOT_CONFIRMED, text=exc.message)
        except WeChatRejected as exc:
            return Said(Heard.REFUSED, text=f"{exc.err_code}: {exc.reason}")
        return Said(Heard.ACCEPTED, RefundOutcome(RefundStatus.PROCESSING, refund_id))

    async def _conclude(self, refund: RefundRecord, action: Action) -> None:
        if action.do is Do.STOP:
            return
        if action.do is Do.FAIL:
            logger.warning("refund %s refused by WeChat: %s", refund.out_refund_no, action.error)
        outcome = RefundOutcome(RefundStatus.FAILED) if action.do is Do.FAIL else action.outcome
        async with self._db.transaction() as tx:
            if action.error is not None:
                await tx.refunds.note_error(refund.out_refund_no, action.error)
            if outcome is not None:
                await apply_outcome(tx, refund, outcome)

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
        async with self._db.statement() as tx:
            return await tx.refunds.by_key(out_trade_no, key)

    async def _load(self, out_refund_no: str) -> tuple[RefundRecord, OrderRecord]:
        async with self._db.transaction() as tx:
            refund = await tx.refunds.by_out_refund_no(out_refund_no)
            order = None if refund is None else await tx.orders.by_id(refund.order_id)
        if refund is None or order is None:
            raise LookupError(f"refund {out_refund_no} vanished")  # never deleted
        return refund, order

    async def _reload(self, out_refund_no: str) -> RefundRecord:
        # The refund alone: the answer carries no order fields, so one read, not two.
        async with self._db.statement() as tx:
            refund = await tx.refunds.by_out_refund_no(out_refund_no)
        if refund is None:
            raise LookupError(f"refund {out_refund_no} vanished")  # never deleted
        return refund


def _refund_order(refund: RefundRecord, order: OrderRecord) -> RefundOrder:
    return RefundOrder(
        out_trade_no=order.out_trade_no,
        out_refund_no=refund.out_refund_no,
        total_fee=order.total_fee,
        refund_fee=refund.refund_fee,
        reason=refund.reason,
    )


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
