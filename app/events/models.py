from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, column
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UTCDateTime, utcnow


class OutboxEvent(Base):
    """One state change, written by the transaction that makes it (the outbox)."""

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_feed", "txid", "id"),)

    # Also the event's ``sequence``: the row is inserted after its transaction has locked
    # the order's row, so for one order ids grow in the order the changes commit.
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    # The order or refund as the API shows it, as JSON text: the exact bytes every delivery
    # of this event carries, whatever the row has become since.
    data: Mapped[str] = mapped_column(Text)
    # PostgreSQL: the inserting transaction's id, so the feed hands out only events older
    # than every transaction still running (0 on SQLite, whose writers are serial).
    txid: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEndpoint(Base):
    """A merchant URL that receives signed events."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    # Subscribed types between commas (",order.paid,refund.failed,"), or ",*,": the fan-out
    # in the event's own statement matches them with one LIKE on either database.
    events: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Sealed with a key derived from WXPAY_SECRET_KEY: the plaintext is needed to sign.
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Set by the first failed attempt since the last success; the endpoint is disabled (and
    # ``disabled_reason`` says why) when it has failed for WXPAY_WEBHOOK_DISABLE_AFTER_SECONDS.
    failing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event owed to one endpoint, until a 2xx."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("uq_webhook_deliveries_event_endpoint", "event_id", "endpoint_id", unique=True),
        # The worker's claim: only undelivered rows, few among many.
        Index(
            "ix_webhook_deliveries_due",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=column("delivered_at").is_(None),
            sqlite_where=column("delivered_at").is_(None),
        ),
        # The in-flight cap: the rows being sent now (a lease is cleared when an attempt ends).
        Index(
            "ix_webhook_deliveries_leased",
            "endpoint_id",
            postgresql_where=column("lease_token").isnot(None),
            sqlite_where=column("lease_token").isnot(None),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    # The worker sending it holds the lease; a worker killed mid-send lets it run out, and
    # another sends again (at least once).
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookAttempt(Base):
    """Every attempt to deliver, whatever came of it."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # None: no HTTP answer (timeout, refused connection); ``error`` says which.
    status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    body_excerpt: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(String(200))
