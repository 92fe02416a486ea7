"""What an event's ``data`` says: the order or refund as the API shows it, plus what a
merchant needs to fulfil (the buyer's openid, the product, a refund's out_trade_no).

An event stores the rows its transaction saw (a snapshot), and ``data`` is rendered from
them here, the one place that knows the shape: so the payment's statement on PostgreSQL can
write its event itself (``to_jsonb`` of the row it just updated) in the same round trip.

Outside the events package on purpose: it knows orders and refunds, which write events, so
the composition root hands ``render_data`` to the events package instead of it importing them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import fields
from typing import Any

from app.events.payloads import as_json
from app.orders.repository import OrderRecord
from app.orders.schemas import OrderOut
from app.refunds.repository import RefundRecord
from app.refunds.schemas import RefundOut


def order_data(order: OrderRecord) -> dict[str, Any]:
    shown = OrderOut.model_validate(order.as_dict()).model_dump(mode="json")
    return {
        **shown,
        "openid": order.openid,
        "product": {"id": order.product_id, "description": order.description},
        "review_reason": order.review_reason,
    }


def refund_data(refund: RefundRecord, order: OrderRecord) -> dict[str, Any]:
    shown = RefundOut.model_validate(refund).model_dump(mode="json")
    return {
        **shown,
        "out_trade_no": order.out_trade_no,
        "openid": order.openid,
        "product": {"id": order.product_id, "description": order.description},
    }


def render_data(snapshot: str) -> str:
    """``data`` from the rows the event's transaction saw (``app.events.repository.snapshot``)."""
    rows = json.loads(snapshot)
    order = _restore(OrderRecord, rows["order"])
    if "refund" in rows:
        return as_json(refund_data(_restore(RefundRecord, rows["refund"]), order))
    return as_json(order_data(order))


def _restore(record: type[Any], row: dict[str, Any]) -> Any:
    names, moments = _SHAPES[record]
    for name in moments:
        if row.get(name) is not None:
            row[name] = dt.datetime.fromisoformat(row[name]).astimezone(dt.UTC)
    return record(**{name: row[name] for name in names})


def _shape(record: type[Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    found = fields(record)
    return tuple(f.name for f in found), tuple(f.name for f in found if "datetime" in str(f.type))


_SHAPES = {record: _shape(record) for record in (OrderRecord, RefundRecord)}
