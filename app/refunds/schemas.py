from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.gateway import MAX_FEN, wechat_can_carry


class RefundIn(BaseModel):
    """How much of a paid order to refund, and why (shown to the user by WeChat)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"refund_fee": 990, "reason": "套餐未使用，全额退款"}]},
    )

    refund_fee: int = Field(gt=0, le=MAX_FEN, description="Amount in fen.")
    reason: str | None = Field(
        default=None,
        max_length=80,
        description="Shown to the user as refund_desc: at most 80 bytes of UTF-8 (26 Chinese "
        "characters).",
    )

    @field_validator("reason")
    @classmethod
    def _fits_refund_desc(cls, value: str | None) -> str | None:
        # WeChat's refund_desc is String(80) (PROTOCOL.md §6.3), counted in bytes; and XML must
        # be able to carry it.
        if value is not None and len(value.encode()) > 80:
            raise ValueError("at most 80 bytes of UTF-8 (26 Chinese characters)")
        if value is not None and not wechat_can_carry(value):
            raise ValueError("contains characters XML cannot carry")
        return value or None


class RefundOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    out_refund_no: str
    refund_fee: int = Field(description="Amount in fen.")
    reason: str | None
    status: str = Field(
        description="PENDING (not yet accepted by WeChat; retried), PROCESSING, SUCCESS, "
        "CHANGE (did not reach the user; finish on the merchant platform), REFUNDCLOSE, FAILED."
    )
    refund_id: str | None
    error: str | None
    success_time: dt.datetime | None
    created_at: dt.datetime
