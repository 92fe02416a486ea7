from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, String, Text, column
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UTCDateTime, utcnow

# The verdicts of notifies we refused (app.sweep.REFUSED_VERDICTS; a test keeps the two equal):
# only those rows are pruned by age, so only they are indexed by it (migration 0009).
REFUSED_VERDICT_VALUES = (
    "BAD_FIELDS",
    "BAD_SIGNATURE",
    "BAD_XML",
    "PROTOCOL_FAIL",
    "REFUND_REFUSED",
    "WRONG_MERCHANT",
)
_REFUSED = column("verdict").in_(REFUSED_VERDICT_VALUES)


class NotifyAudit(Base):
    """Every notify WeChat (or anyone) posted to us, with what we made of it."""

    __tablename__ = "payment_notifies"
    __table_args__ = (
        Index("ix_payment_notifies_out_trade_no", "out_trade_no"),
        # Partial: the prune finds the old refused rows among millions of others without a
        # scan, and the notify's own audit insert maintains no index on received_at.
        Index(
            "ix_payment_notifies_refused_received_at",
            "received_at",
            postgresql_where=_REFUSED,
            sqlite_where=_REFUSED,
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    out_trade_no: Mapped[str | None] = mapped_column(String(64))
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    total_fee: Mapped[int | None] = mapped_column(BigInteger)
    verdict: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    # The received fields as JSON (nothing in a v2 notify is secret), or for a refused body
    # its SHA-256, length and a short excerpt (app.inbound.refused_body).
    raw: Mapped[str] = mapped_column(Text)
