"""A payment gateway that times every operation it passes on (``wxpay_gateway_call_*``).

One wrapper for both API versions, put around each adapter by the composition root: the
figures are per operation as the services see it (retries included, outcome as the port
reports it), next to the per-exchange figures the transport records.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from typing import TypeVar

from fastapi import Response

from app.gateway import (
    ApiVersion,
    CloseOutcome,
    PaymentGateway,
    PaymentNotice,
    PrepayOrder,
    RefundNotice,
    RefundOrder,
    RefundReport,
    TradeReport,
    WeChatRejected,
    WeChatUnavailable,
)
from app.metrics import GATEWAY_CALLS, child

T = TypeVar("T")


class MeteredGateway:
    """``PaymentGateway`` around ``inner``; outcome ``ok``, ``rejected`` (WeChat's final no),
    ``unavailable`` (unknown, retry later) or ``error`` (a bug)."""

    def __init__(self, inner: PaymentGateway) -> None:
        self._inner = inner

    @property
    def version(self) -> ApiVersion:
        return self._inner.version

    @property
    def sign_type(self) -> str:
        return self._inner.sign_type

    async def prepay(self, order: PrepayOrder) -> str:
        return await self._timed("prepay", self._inner.prepay(order))

    def pay_params(self, prepay_id: str) -> dict[str, str]:
        return self._inner.pay_params(prepay_id)

    async def query(self, out_trade_no: str) -> TradeReport | None:
        return await self._timed("query", self._inner.query(out_trade_no))

    async def close(self, out_trade_no: str) -> CloseOutcome:
        return await self._timed("close", self._inner.close(out_trade_no))

    async def refund(self, refund: RefundOrder) -> str:
        return await self._timed("refund", self._inner.refund(refund))

    async def refund_query(self, out_refund_no: str) -> RefundReport | None:
        return await self._timed("refund_query", self._inner.refund_query(out_refund_no))

    async def parse_payment_notify(self, body: bytes, headers: Mapping[str, str]) -> PaymentNotice:
        return await self._inner.parse_payment_notify(body, headers)

    async def parse_refund_notify(self, body: bytes, headers: Mapping[str, str]) -> RefundNotice:
        return await self._inner.parse_refund_notify(body, headers)

    def notify_reply(self, acknowledged: bool, message: str, status: int) -> Response:
        return self._inner.notify_reply(acknowledged, message, status)

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await call
            outcome = "ok"
            return result
        except WeChatRejected:
            outcome = "rejected"
            raise
        except WeChatUnavailable:
            outcome = "unavailable"
            raise
        finally:
            elapsed = time.perf_counter() - started
            child(GATEWAY_CALLS, self.version.value, operation, outcome).observe(elapsed)
