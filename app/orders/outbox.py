"""An order's changes that merchants hear of, each written with its event in one unit of work.

Every change to an order that a merchant is told about goes through one of these, so the rule
"one event per change, never for a change that rolled back" lives here: each writes its event
only when the guarded UPDATE before it moved a row, in the caller's transaction. The events
package stores and sends events; what an order's change means is this package's to say.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.events.repository import snapshot
from app.events.types import EventType
from app.orders.repository import OrderRecord, PaymentFacts
from app.orders.states import ReviewReason

if TYPE_CHECKING:
    from app.uow import UnitOfWork


async def record_order_event(tx: UnitOfWork, event_type: EventType, order: OrderRecord) -> None:
    await tx.events.add(event_type.value, order.id, snapshot(order=order.as_dict()))


async def pay_and_record(
    tx: UnitOfWork, out_trade_no: str, total_fee: int, facts: PaymentFacts, *, after_close: bool
) -> OrderRecord | None:
    """``mark_paid`` (which writes the ``order.paid`` event in its own statement: the notify
    is the hot path) and, paid after close, the review flag's event."""
    order = await tx.orders.mark_paid(out_trade_no, total_fee, facts, after_close=after_close)
    if order is not None and after_close:
        await record_order_event(tx, EventType.ORDER_REVIEW_REQUIRED, order)
    return order


async def close_and_record(tx: UnitOfWork, out_trade_no: str) -> bool:
    """``mark_closed`` and its ``order.closed`` event; False if the order was not closable."""
    order = await tx.orders.mark_closed(out_trade_no)
    if order is not None:
        await record_order_event(tx, EventType.ORDER_CLOSED, order)
    return order is not None


async def flag_and_record(tx: UnitOfWork, order_id: int, reason: ReviewReason) -> None:
    """Flag an order for a person; ``order.review_required`` once per reason, however many
    notifies or queries report the same disagreement."""
    order = await tx.orders.flag_review(order_id, reason)
    if order is not None:
        await record_order_event(tx, EventType.ORDER_REVIEW_REQUIRED, order)
