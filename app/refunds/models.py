from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UTCDateTime, utcnow
from app.refunds.states import RefundStatus


class Refund(Base):
    """One refund request, identified at WeChat by ``out_refund_no`` (refunded at most once)."""

    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("order_id", "idempotency_key", name="uq_refunds_order_idempotency_key"),
        Index("ix_refunds_order_id", "order_id"),
        Index("ix_refunds_status_updated", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    out_refund_no: Mapped[str] = mapped_column(String(64), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    refund_fee: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16), default=RefundStatus.PENDING.value)
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    # WeChat's id, once it has accepted the refund.
    refund_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The last failure to reach WeChat, or its refusal.
    error: Mapped[str | None] = mapped_column(Text)
    success_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Whoever talks to WeChat about this refund holds the lease: the request, a replay, the
    # sweep; the token tells the holder apart, so nobody renews or ends another's lease.
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
