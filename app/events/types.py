"""The event types merchants subscribe to."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    ORDER_PAID = "order.paid"
    ORDER_CLOSED = "order.closed"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    REFUND_ABNORMAL = "refund.abnormal"
    ORDER_REVIEW_REQUIRED = "order.review_required"


# An endpoint subscribed to this receives every type.
ALL_TYPES = "*"
