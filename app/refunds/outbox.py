"""A refund's moves that merchants hear of, each written with its event in the same unit of
work (the rule of ``app.orders.outbox``, for refunds)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.events.repository import snapshot
from app.events.types import EventType
from app.refunds.repository import RefundRecord
from app.refunds.states import RefundStatus

if TYPE_CHECKING:
    from app.uow import UnitOfWork

# A refund's move to one of these statuses is an event; PROCESSING (accepted, not finished)
# is not. v3's ABNORMAL is stored as CHANGE by the v3 adapter.
REFUND_EVENT_TYPES: dict[RefundStatus, EventType] = {
    RefundStatus.SUCCESS: EventType.REFUND_SUCCEEDED,
    RefundStatus.FAILED: EventType.REFUND_FAILED,
    RefundStatus.REFUNDCLOSE: EventType.REFUND_FAILED,
    RefundStatus.CHANGE: EventType.REFUND_ABNORMAL,
}


async def record_refund_event(tx: UnitOfWork, refund: RefundRecord) -> None:
    """The event of a refund's move, if the move is one merchants hear of. The order's row is
    locked first, so an order's events get ids (``sequence``) in the order they commit."""
    event_type = REFUND_EVENT_TYPES.get(RefundStatus(refund.status))
    if event_type is None:
        return
    order = await tx.orders.lock_for_event(refund.order_id)
    assert order is not None  # a refund's order is never deleted
    data = snapshot(order=order.as_dict(), refund=refund.as_dict())
    await tx.events.add(event_type.value, order.id, data)
