"""The end-of-scenario check: our database against what WeChat (the simulator) believes.

Every order paid at WeChat is ``SUCCESS`` here with WeChat's ``transaction_id`` and exactly one
``PAID`` event; nothing is paid here that WeChat did not pay; nothing is half-written. Refunds:
what WeChat has refunded on each order equals the refunds WeChat accepted in our records, and
the order's reserved ``refunded_fee`` equals its refunds that still count. Every order was
created with the API version the scenario runs on, here and at WeChat alike (the simulator
keeps v2 and v3 orders in one book, so the same checks hold for both).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.plugins.simulator import SimulatorHandle

PAID_STATUSES = frozenset({"SUCCESS", "REFUND"})

_OUR_ORDERS = text(
    "SELECT o.out_trade_no, o.api_version, o.status, o.transaction_id, o.paid_at, o.prepay_id,"
    " o.prepay_error, o.refunded_fee,"
    " (SELECT count(*) FROM order_events e WHERE e.order_id = o.id AND e.kind = 'PAID')"
    "  AS paid_events,"
    " (SELECT coalesce(sum(r.refund_fee), 0) FROM refunds r WHERE r.order_id = o.id"
    "  AND r.status IN ('PROCESSING', 'SUCCESS', 'CHANGE')) AS accepted_refunds,"
    " (SELECT coalesce(sum(r.refund_fee), 0) FROM refunds r WHERE r.order_id = o.id"
    "  AND r.status NOT IN ('FAILED', 'REFUNDCLOSE')) AS counted_refunds"
    " FROM orders o"
)


@dataclass
class Ledger:
    wechat_orders: int = 0
    wechat_paid: int = 0
    our_orders: int = 0
    our_paid: int = 0
    paid_events: int = 0
    api_versions: dict[str, int] = field(default_factory=dict)  # our orders per version
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {
            "wechat_orders": self.wechat_orders,
            "wechat_paid": self.wechat_paid,
            "our_orders": self.our_orders,
            "our_paid": self.our_paid,
            "paid_events": self.paid_events,
            "api_versions": self.api_versions,
            "problems": len(self.problems),
        }


async def compare_with_wechat(
    engine: AsyncEngine, simulator: SimulatorHandle, api_version: str
) -> Ledger:
    """Our books against WeChat's, for a scenario whose orders are all on ``api_version``."""
    wechat = {o["out_trade_no"]: o for o in await simulator.orders()}
    async with engine.connect() as conn:
        ours = {row.out_trade_no: row for row in (await conn.execute(_OUR_ORDERS)).all()}
    ledger = Ledger(
        wechat_orders=len(wechat),
        wechat_paid=sum(o["trade_state"] in PAID_STATUSES for o in wechat.values()),
        our_orders=len(ours),
        our_paid=sum(r.status in PAID_STATUSES for r in ours.values()),
        paid_events=sum(r.paid_events for r in ours.values()),
        api_versions=dict(Counter(r.api_version for r in ours.values())),
    )
    for no, order in wechat.items():
        ledger.problems += _wechat_side(no, order, ours.get(no))
    for no, row in ours.items():
        ledger.problems += _our_side(no, row, wechat.get(no))
        ledger.problems += _version(no, row, wechat.get(no), api_version)
    return ledger


def _version(no: str, row: Any, order: dict[str, Any] | None, api_version: str) -> list[str]:
    theirs = order["api_version"] if order is not None else row.api_version
    if row.api_version == theirs == api_version:
        return []
    return [f"{no}: created on {row.api_version} here, {theirs} at WeChat, not {api_version}"]


def _wechat_side(no: str, order: dict[str, Any], row: Any) -> list[str]:
    if row is None:
        return [f"{no}: WeChat has an order we do not know"]
    if order["trade_state"] not in PAID_STATUSES:
        return []
    if row.status not in PAID_STATUSES:
        return [f"{no}: paid at WeChat, {row.status} with us (lost payment)"]
    if row.transaction_id != order["transaction_id"]:
        return [f"{no}: transaction {row.transaction_id} != WeChat's {order['transaction_id']}"]
    if row.accepted_refunds != order["refunded_fee"]:
        return [f"{no}: WeChat refunded {order['refunded_fee']}, we hold {row.accepted_refunds}"]
    return []


def _our_side(no: str, row: Any, order: dict[str, Any] | None) -> list[str]:
    problems = []
    paid_here = row.status in PAID_STATUSES
    if paid_here and (order is None or order["trade_state"] not in PAID_STATUSES):
        problems.append(f"{no}: {row.status} with us, WeChat did not pay it")
    if paid_here and (row.transaction_id is None or row.paid_at is None):
        problems.append(f"{no}: half-written payment (no transaction_id or paid_at)")
    if row.paid_events != (1 if paid_here else 0):
        problems.append(f"{no}: {row.status} with {row.paid_events} PAID events")
    if row.prepay_id is None and row.prepay_error is None:
        problems.append(f"{no}: orphan row (neither prepay_id nor prepay_error)")
    if row.refunded_fee != row.counted_refunds:
        problems.append(f"{no}: reserved {row.refunded_fee} for refunds of {row.counted_refunds}")
    if row.prepay_id is not None and order is None:
        problems.append(f"{no}: has prepay_id {row.prepay_id} but WeChat has no such order")
    return problems
