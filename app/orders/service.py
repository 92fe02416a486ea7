"""Order rules.

- The server prices every order from the catalogue; the client names a product and a quantity.
- Create-order is three steps: commit the order (``NOTPAY``), call unified order with no
  transaction open, commit the outcome. A failed call leaves a payable order with the reason,
  which the client can retry (re-entry with identical parameters is idempotent at WeChat).
- ``prepay_id`` lives two hours at WeChat (PROTOCOL.md §2.1); after that, pay params re-enter
  unified order with the same ``out_trade_no`` and identical parameters.
- WeChat refuses to close an order in its first five minutes (PROTOCOL.md §6.2).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from app.auth.service import CurrentUser
from app.config import Settings
from app.db import utcnow
from app.errors import AppError, Conflict, NotFound, upstream_rejected, upstream_unavailable
from app.gateway import (
    MAX_FEN,
    CloseOutcome,
    Gateways,
    PaymentGateway,
    PaymentResult,
    PrepayOrder,
    WeChatRejected,
    WeChatUnavailable,
)
from app.orders.numbers import new_out_trade_no
from app.orders.outbox import close_and_record
from app.orders.repository import DuplicateOrder, OrderRecord
from app.orders.states import PAYABLE, OrderStatus
from app.products.service import ProductNotFound
from app.ratelimits.service import Limit, RateLimiter

if TYPE_CHECKING:
    from app.uow import Database

logger = logging.getLogger(__name__)

PREPAY_LIFETIME = dt.timedelta(hours=2)
# Hand out a prepay_id only while the user still has time to pay with it.
PREPAY_MARGIN = dt.timedelta(minutes=5)
CLOSE_EARLIEST = dt.timedelta(minutes=5)


class OrderNotFound(NotFound):
    code = "ORDER_NOT_FOUND"
    message = "No such order."


class OrderNotPayable(Conflict):
    code = "ORDER_NOT_PAYABLE"
    message = "The order is no longer payable."


class IdempotencyKeyReused(Conflict):
    code = "IDEMPOTENCY_KEY_REUSED"
    message = "This Idempotency-Key was already used for a different order."


class AmountTooLarge(AppError):
    status = 422
    code = "AMOUNT_TOO_LARGE"
    message = f"The order total exceeds what WeChat Pay accepts ({MAX_FEN} fen); order fewer."


class CloseTooEarly(Conflict):
    code = "CLOSE_TOO_EARLY"


@dataclass(frozen=True, slots=True)
class OrderWithParams:
    order: OrderRecord
    pay_params: dict[str, str]


class PaymentRecorder(Protocol):
    """Applies a payment WeChat reports, exactly once (``app.payments.service``)."""

    async def apply_paid(self, result: PaymentResult) -> object: ...


class OrderService:
    """Takes a connection only for each statement, never across a WeChat call.

    Every write here is one guarded statement, a transaction of its own; what must change
    together (a payment and its event and audit) goes through ``PaymentService``.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        gateways: Gateways,
        payments: PaymentRecorder,
        limiter: RateLimiter,
    ) -> None:
        self._db = db
        self._settings = settings
        self._gateways = gateways
        self._payments = payments
        self._limiter = limiter
        self._wechat_calls = Limit(settings.order_wechat_calls_per_minute)

    async def create_order(
        self,
        user: CurrentUser,
        product_id: int,
        quantity: int,
        client_ip: str,
        idempotency_key: str | None = None,
    ) -> OrderWithParams:
        """Price, store and prepay an order; a repeated ``idempotency_key`` returns the first."""
        idempotency_key = idempotency_key or None  # an empty header is no key
        try:
            order = await self._insert(user, product_id, quantity, client_ip, idempotency_key)
        except DuplicateOrder:
            # Insert first, look up only on conflict: a first attempt (the usual case) costs no
            # lookup, and a retry racing its original cannot slip between a check and the insert.
            first = await self._by_idempotency_key(user, idempotency_key or "")
            if first is None:
                raise
            return await self._replay(user, first, product_id, quantity)
        return OrderWithParams(order, await self._prepay(order))

    async def _replay(
        self, user: CurrentUser, order: OrderRecord, product_id: int, quantity: int
    ) -> OrderWithParams:
        if (order.product_id, order.quantity) != (product_id, quantity):
            raise IdempotencyKeyReused()
        return await self.pay_params(user, order.out_trade_no)

    async def get_order(
        self, user: CurrentUser, out_trade_no: str, *, sync: bool = False
    ) -> OrderRecord:
        """The caller's own order; with ``sync``, first learn its state from WeChat."""
        order = await self._owned(user, out_trade_no)
        if sync and order.status in PAYABLE:
            await self._throttle(order)
            await self.sync_with_wechat(order)
            order = await self._owned(user, out_trade_no)
        return order

    async def list_orders(self, user: CurrentUser, limit: int, offset: int) -> list[OrderRecord]:
        async with self._db.statement() as tx:
            return await tx.orders.list_for_user(user.id, limit, offset)

    async def needing_review(self, limit: int) -> list[OrderRecord]:
        """Orders flagged because money and records disagree, newest first."""
        async with self._db.statement() as tx:
            return await tx.orders.needing_review(limit)

    async def pay_params(self, user: CurrentUser, out_trade_no: str) -> OrderWithParams:
        """Fresh ``wx.requestPayment`` parameters for an unpaid order of the caller's."""
        order = await self._owned(user, out_trade_no)
        if order.status not in PAYABLE:
            raise OrderNotPayable(f"The order is {order.status}; it cannot be paid.")
        if order.time_expire <= utcnow():
            raise OrderNotPayable("The order has expired; create a new one.")
        if order.prepay_id and order.prepay_expires_at and order.prepay_expires_at > utcnow():
            return OrderWithParams(order, self._gateway(order).pay_params(order.prepay_id))
        await self._throttle(order)
        return OrderWithParams(order, await self._prepay(order))

    async def _throttle(self, order: OrderRecord) -> None:
        # Calls to WeChat a user can repeat at will: bounded per order, across replicas.
        await self._limiter.check(f"wechat:order:{order.out_trade_no}", self._wechat_calls)

    async def close_order(self, user: CurrentUser, out_trade_no: str) -> OrderRecord:
        """Close an unpaid order at WeChat and here; closing a closed order changes nothing."""
        order = await self._owned(user, out_trade_no)
        if order.status == OrderStatus.CLOSED:
            return order
        if order.status not in PAYABLE:
            raise OrderNotPayable(f"The order is {order.status}; it cannot be closed.")
        earliest = order.created_at + CLOSE_EARLIEST
        if utcnow() < earliest:
            raise CloseTooEarly(
                "WeChat does not allow closing an order within 5 minutes of creating it; "
                f"try again after {earliest.isoformat(timespec='seconds')}."
            )
        await self._close(order)
        return await self._owned(user, out_trade_no)

    async def sync_with_wechat(self, order: OrderRecord) -> OrderStatus | None:
        """Ask WeChat for the order's state and apply it, through the notify's own rules.

        Returns the state WeChat reports, or None if WeChat never saw the order.
        """
        report = await self._gateway(order).query(order.out_trade_no)
        if report is None:
            return None
        if report.payment is not None:
            await self._payments.apply_paid(report.payment)
        elif report.status is OrderStatus.CLOSED:
            async with self._db.transaction() as tx:
                await close_and_record(tx, order.out_trade_no)
        elif report.status is OrderStatus.PAYERROR:
            async with self._db.statement() as tx:
                await tx.orders.mark_payment_failed(order.out_trade_no)
        return report.status

    async def expire(self, order: OrderRecord) -> bool:
        """Close an order whose ``time_expire`` has passed (the sweep has queried it first).
        True when this call closed it; False when something else decided first (the user
        paid, or another writer moved it)."""
        return await self._close(order)

    async def _close(self, order: OrderRecord) -> bool:
        if await self._gateway(order).close(order.out_trade_no) is CloseOutcome.PAID:
            await self.sync_with_wechat(order)  # the user paid first: record the payment
            return False
        async with self._db.transaction() as tx:
            return await close_and_record(tx, order.out_trade_no)

    def _gateway(self, order: OrderRecord) -> PaymentGateway:
        return self._gateways.of(order.api_version)

    async def _insert(
        self,
        user: CurrentUser,
        product_id: int,
        quantity: int,
        client_ip: str,
        idempotency_key: str | None,
    ) -> OrderRecord:
        now = utcnow()
        values = {
            "out_trade_no": new_out_trade_no(now),
            "user_id": user.id,
            "openid": user.openid,
            "product_id": product_id,
            "quantity": quantity,
            "status": OrderStatus.NOTPAY.value,
            "sign_type": self._gateways.current.sign_type,
            "api_version": self._gateways.current.version.value,
            "client_ip": client_ip,
            "idempotency_key": idempotency_key,
            "time_expire": now + dt.timedelta(minutes=self._settings.order_ttl_minutes),
        }
        async with self._db.statement() as tx:
            order = await tx.orders.insert_priced(values, MAX_FEN)
        if order is not None:
            return order
        async with self._db.statement() as tx:
            product = await tx.products.get(product_id)
        raise ProductNotFound() if product is None or not product.active else AmountTooLarge()

    async def _prepay(self, order: OrderRecord) -> dict[str, str]:
        """Prepay a stored order, with no transaction open; then record the outcome."""
        gateway = self._gateway(order)
        try:
            prepay_id = await gateway.prepay(_prepay_order(order))
        except WeChatRejected as exc:
            await self._record_prepay_failure(order.out_trade_no, f"{exc.err_code}: {exc.reason}")
            raise upstream_rejected(exc) from exc
        except WeChatUnavailable as exc:
            await self._record_prepay_failure(order.out_trade_no, exc.message)
            raise upstream_unavailable(exc) from exc
        async with self._db.statement() as tx:
            await tx.orders.set_prepay(
                order.out_trade_no, prepay_id, utcnow() + PREPAY_LIFETIME - PREPAY_MARGIN, None
            )
        return gateway.pay_params(prepay_id)

    async def _record_prepay_failure(self, out_trade_no: str, reason: str) -> None:
        logger.warning("unified order failed for %s: %s", out_trade_no, reason)
        async with self._db.statement() as tx:
            await tx.orders.set_prepay(out_trade_no, None, None, reason[:500])

    async def _owned(self, user: CurrentUser, out_trade_no: str) -> OrderRecord:
        # Someone else's order is "not found", so order numbers reveal nothing.
        async with self._db.statement() as tx:
            order = await tx.orders.by_out_trade_no(out_trade_no)
        if order is None or order.user_id != user.id:
            raise OrderNotFound()
        return order

    async def _by_idempotency_key(self, user: CurrentUser, key: str) -> OrderRecord | None:
        async with self._db.statement() as tx:
            return await tx.orders.by_idempotency_key(user.id, key)


def _prepay_order(order: OrderRecord) -> PrepayOrder:
    # Built only from stored fields, so a re-entry sends identical parameters.
    return PrepayOrder(
        out_trade_no=order.out_trade_no,
        description=order.description,
        total_fee=order.total_fee,
        openid=order.openid,
        client_ip=order.client_ip,
        time_expire=order.time_expire,
        attach=f"p{order.product_id}x{order.quantity}",
    )
