"""Fault switches: the ways real WeChat misbehaves, on demand, per order or for everything.

Notify faults shape a payment notify: ``duplicate_notify`` (extra copies, optionally at the
same instant, as several WeChat servers do), ``delay_notify``, ``tamper_amount`` (a correctly
signed notify whose ``total_fee`` differs from the order), ``bad_signature`` and
``result_fail``. Upstream faults hit the API endpoints: ``upstream_5xx``, ``upstream_timeout``
(the request is processed, the answer comes too late), ``malformed_xml``, ``systemerror`` and
``business_error`` (a signed ``result_code=FAIL`` with the given ``err_code``, request unread).

The same switches act on v3 (PROTOCOL.md §8): ``tamper_amount`` changes ``amount.total`` inside
the encrypted resource, ``bad_signature`` corrupts ``Wechatpay-Signature``, ``malformed_xml``
answers truncated JSON, ``systemerror`` is ``500 SYSTEM_ERROR`` and ``business_error`` answers
``http_status`` with ``err_code`` as the ``code``; ``result_fail`` is v2 only (v3 notifies only
successes). v3 adds ``stale_timestamp`` (a notify signed ``stale_seconds`` ago, outside the
five-minute window) and ``signtest_probe`` (one ``WECHATPAY/SIGNTEST/`` probe, sent once and
never retried, before the genuine notify). ``bad_signature``, ``stale_timestamp`` and
``signtest_probe`` with an ``endpoint`` set sign that v3 endpoint's answer the same way instead.

Refund faults, both versions: ``refund_abnormal`` and ``refund_closed`` settle a refund as
ABNORMAL (v2: CHANGE) or CLOSED (v2: REFUNDCLOSE, its amount refundable again) instead of
SUCCESS, with the notify to match (v3 ``REFUND.ABNORMAL`` / ``REFUND.CLOSED``).
"""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class FaultName(StrEnum):
    DUPLICATE_NOTIFY = "duplicate_notify"
    DELAY_NOTIFY = "delay_notify"
    TAMPER_AMOUNT = "tamper_amount"
    BAD_SIGNATURE = "bad_signature"
    RESULT_FAIL = "result_fail"
    UPSTREAM_5XX = "upstream_5xx"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    MALFORMED_XML = "malformed_xml"
    SYSTEMERROR = "systemerror"
    BUSINESS_ERROR = "business_error"
    STALE_TIMESTAMP = "stale_timestamp"
    SIGNTEST_PROBE = "signtest_probe"
    REFUND_ABNORMAL = "refund_abnormal"
    REFUND_CLOSED = "refund_closed"


NOTIFY_FAULTS = frozenset(
    {
        FaultName.DUPLICATE_NOTIFY,
        FaultName.DELAY_NOTIFY,
        FaultName.TAMPER_AMOUNT,
        FaultName.BAD_SIGNATURE,
        FaultName.RESULT_FAIL,
        FaultName.STALE_TIMESTAMP,
        FaultName.SIGNTEST_PROBE,
    }
)
Endpoint = Literal[
    "jscode2session", "unifiedorder", "orderquery", "closeorder", "refund", "refundquery",
    "v3_jsapi", "v3_query", "v3_close", "v3_refund", "v3_refund_query", "v3_certificates",
]  # fmt: skip


class FaultSpec(BaseModel):
    """One switch. Unset ``out_trade_no``/``endpoint`` mean every order/endpoint; unset
    ``count`` means until cleared."""

    name: FaultName
    out_trade_no: str | None = None
    endpoint: Endpoint | None = None
    count: int | None = Field(default=None, ge=1)
    copies: int = Field(default=1, ge=1, le=20, description="duplicate_notify: extra copies")
    concurrent: bool = Field(default=False, description="duplicate_notify: all at once")
    delay_ms: float = Field(default=1000, ge=0, description="delay_notify: real milliseconds")
    delta: int = Field(default=1, description="tamper_amount: added to total_fee")
    status: int = Field(default=500, ge=500, le=599, description="upstream_5xx: HTTP status")
    seconds: float = Field(default=30, ge=0, description="upstream_timeout: real seconds")
    err_code: str = Field(
        default="ERROR", pattern=r"^[A-Z_]{1,32}$", description="business_error: err_code"
    )
    err_code_des: str = Field(default="业务错误", max_length=128)
    http_status: int = Field(
        default=400, ge=400, le=599, description="business_error on v3: HTTP status"
    )
    stale_seconds: float = Field(
        default=600, ge=300, description="stale_timestamp: how old the signature is"
    )


class Fault(FaultSpec):
    id: int
    remaining: int | None = None


class FaultBook:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: FaultSpec) -> Fault:
        fault = Fault(**spec.model_dump(), id=next(self._ids), remaining=spec.count)
        self._faults.append(fault)
        return fault

    def take(
        self, name: FaultName, *, out_trade_no: str | None = None, endpoint: str | None = None
    ) -> Fault | None:
        """The first matching switch, used up once (it disappears when its count runs out)."""
        for fault in self._faults:
            if fault.name is name and _matches(fault, out_trade_no, endpoint):
                self._use(fault)
                return fault
        return None

    def take_for_endpoint(self, name: FaultName, endpoint: str) -> Fault | None:
        """Like ``take``, but only a switch that names this very endpoint: a notify fault left
        open to every endpoint keeps waiting for its notify."""
        for fault in self._faults:
            if fault.name is name and fault.endpoint == endpoint:
                self._use(fault)
                return fault
        return None

    def _use(self, fault: Fault) -> None:
        if fault.remaining is None:
            return
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._faults.remove(fault)

    def active(self) -> list[Fault]:
        return list(self._faults)

    def remove(self, fault_id: int) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        return len(self._faults) < before

    def clear(self) -> None:
        self._faults.clear()


def _matches(fault: Fault, out_trade_no: str | None, endpoint: str | None) -> bool:
    if fault.out_trade_no is not None and fault.out_trade_no != out_trade_no:
        return False
    return fault.endpoint is None or fault.endpoint == endpoint
