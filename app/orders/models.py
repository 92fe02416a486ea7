from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    column,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UTCDateTime, utcnow
from app.orders.states import OrderStatus


class Order(Base):
    """One payment attempt at WeChat, identified there by ``out_trade_no``."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_orders_user_idempotency_key"),
        Index("ix_orders_user_created", "user_id", "created_at"),
        Index("ix_orders_status_created", "status", "created_at"),
        # The admin review list: only flagged orders, a few hundred among millions, so the list
        # reads them all and sorts them instead of scanning the table. Not keyed on updated_at:
        # an index on it would make every update that sets updated_at (the prepay of each new
        # order, refund reservations) non-HOT, writing all the table's indexes again.
        Index(
            "ix_orders_review_reason",
            "review_reason",
            postgresql_where=column("review_reason").is_not(None),
            sqlite_where=column("review_reason").is_not(None),
        ),
        # Room on each page for the updates every order gets, so they stay HOT (migration 0006).
        {"postgresql_with": {"fillfactor": 90}},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    out_trade_no: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    openid: Mapped[str] = mapped_column(String(128))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    total_fee: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(String(127))
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.NOTPAY.value)
    sign_type: Mapped[str] = mapped_column(String(16))
    # The WeChat Pay API version the order was created with: every later call about it (query,
    # close, refund) goes to that version's gateway.
    api_version: Mapped[str] = mapped_column(String(8), server_default="v2")
    client_ip: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    time_expire: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    prepay_id: Mapped[str | None] = mapped_column(String(64))
    prepay_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The last unified-order failure, kept so the client can retry with the same order.
    prepay_error: Mapped[str | None] = mapped_column(Text)
    transaction_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cash_fee: Mapped[int | None] = mapped_column(BigInteger)
    # Refunds requested and not failed or closed: a reservation taken by a guarded UPDATE, so
    # concurrent refunds can never add up to more than was paid.
    refunded_fee: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    bank_type: Mapped[str | None] = mapped_column(String(32))
    review_reason: Mapped[str | None] = mapped_column(String(32))
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # A sweeper's short lease: claimed rows are skipped by other replicas until it runs out,
    # so no lock is held across the calls to WeChat.
    sweep_lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class OrderEvent(Base):
    """Facts about an order for the rest of the business (fulfilment, review), once each."""

    __tablename__ = "order_events"
    __table_args__ = (UniqueConstraint("order_id", "kind", name="uq_order_events_order_kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
