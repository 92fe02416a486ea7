"""What an event's ``data`` says: the order or refund as the API shows it, plus what a
merchant needs to fulfil (the buyer's openid, the product, a refund's out_trade_no)."""

from __future__ import annotations

import json
from typing import Any

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


def as_json(data: dict[str, Any]) -> str:
    """Compact and stable: these bytes are stored once and sent as they are."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
