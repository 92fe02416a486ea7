"""Order statuses and the one table of moves between them.

Status names are WeChat's ``trade_state`` values (PROTOCOL.md §6.1), so what we store and what
order query reports compare directly.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    NOTPAY = "NOTPAY"
    SUCCESS = "SUCCESS"
    CLOSED = "CLOSED"
    PAYERROR = "PAYERROR"
    REFUND = "REFUND"


# target status -> the statuses it may be reached from. Every status change goes through
# a guarded UPDATE ... WHERE status IN (sources), so of two racing writers only one wins.
ALLOWED_MOVES: dict[OrderStatus, frozenset[OrderStatus]] = {
    # Paid: from unpaid, from a failed attempt, and from CLOSED (the user paid just before our
    # close reached WeChat; the money moved, so we record it and flag the order for review).
    OrderStatus.SUCCESS: frozenset({OrderStatus.NOTPAY, OrderStatus.PAYERROR, OrderStatus.CLOSED}),
    OrderStatus.PAYERROR: frozenset({OrderStatus.NOTPAY}),
    OrderStatus.CLOSED: frozenset({OrderStatus.NOTPAY, OrderStatus.PAYERROR}),
    OrderStatus.REFUND: frozenset({OrderStatus.SUCCESS}),
}

PAYABLE = frozenset({OrderStatus.NOTPAY, OrderStatus.PAYERROR})
# Paid: the money moved (refunds included, which leave the payment recorded).
PAID = frozenset({OrderStatus.SUCCESS, OrderStatus.REFUND})
# An order can be refunded once paid, and again while refunds leave some of it unrefunded.
REFUNDABLE = PAID


def sources_of(target: OrderStatus) -> frozenset[OrderStatus]:
    """The statuses from which ``target`` may be reached (empty: never)."""
    return ALLOWED_MOVES.get(target, frozenset())


class ReviewReason(StrEnum):
    """Why an order needs a human: money and our records disagree."""

    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    PAID_AFTER_CLOSE = "PAID_AFTER_CLOSE"
    TRANSACTION_CONFLICT = "TRANSACTION_CONFLICT"
    # A refund could not reach the user's account; it must be finished on the merchant platform.
    REFUND_CHANGE = "REFUND_CHANGE"
    # WeChat reports a refund that contradicts our record of it (amount, order, or outcome).
    REFUND_CONFLICT = "REFUND_CONFLICT"
    # WeChat refunded the order on a request that did not come from this service.
    REFUND_OUTSIDE = "REFUND_OUTSIDE"
