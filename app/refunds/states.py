"""Refund statuses and the one table of moves between them.

``PROCESSING``, ``SUCCESS``, ``CHANGE`` and ``REFUNDCLOSE`` are WeChat's ``refund_status``
values (PROTOCOL.md §6.4, §6.5). Two are ours: ``PENDING`` (stored, not yet accepted by
WeChat: the request may be sent again with the same ``out_refund_no``, which WeChat refunds at
most once) and ``FAILED`` (WeChat refused the request outright; no money moved).
"""

from __future__ import annotations

from enum import StrEnum


class RefundStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    CHANGE = "CHANGE"
    REFUNDCLOSE = "REFUNDCLOSE"
    FAILED = "FAILED"


OPEN = frozenset({RefundStatus.PENDING, RefundStatus.PROCESSING})

# target status -> the statuses it may be reached from, applied by a guarded UPDATE.
# A notify may overtake the reply to our own request, so every outcome is reachable from
# PENDING as well as from PROCESSING. CHANGE (the money could not reach the user) is finished
# by hand on the merchant platform and may still end in SUCCESS or REFUNDCLOSE.
ALLOWED_MOVES: dict[RefundStatus, frozenset[RefundStatus]] = {
    RefundStatus.PROCESSING: frozenset({RefundStatus.PENDING}),
    RefundStatus.SUCCESS: OPEN | {RefundStatus.CHANGE},
    RefundStatus.CHANGE: OPEN,
    RefundStatus.REFUNDCLOSE: OPEN | {RefundStatus.CHANGE},
    RefundStatus.FAILED: frozenset({RefundStatus.PENDING}),
}

# Outcomes after which the refunded money is not (or no longer) on its way to the user: the
# amount goes back into what the order may still refund.
RELEASES_AMOUNT = frozenset({RefundStatus.REFUNDCLOSE, RefundStatus.FAILED})


def sources_of(target: RefundStatus) -> frozenset[RefundStatus]:
    return ALLOWED_MOVES.get(target, frozenset())
