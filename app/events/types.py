"""The event types merchants subscribe to, and which refund statuses raise which."""

from __future__ import annotations

from enum import StrEnum

from app.refunds.states import RefundStatus


class EventType(StrEnum):
    ORDER_PAID = "order.paid"
    ORDER_CLOSED = "order.closed"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    REFUND_ABNORMAL = "refund.abnormal"
    ORDER_REVIEW_REQUIRED = "order.review_required"


# A refund's move to one of these statuses is an event; PROCESSING (accepted, not finished)
# is not. v3's ABNORMAL is stored as CHANGE by the v3 adapter.
REFUND_EVENTS: dict[RefundStatus, EventType] = {
    RefundStatus.SUCCESS: EventType.REFUND_SUCCEEDED,
    RefundStatus.FAILED: EventType.REFUND_FAILED,
    RefundStatus.REFUNDCLOSE: EventType.REFUND_FAILED,
    RefundStatus.CHANGE: EventType.REFUND_ABNORMAL,
}

# An endpoint subscribed to this receives every type.
ALL_TYPES = "*"
