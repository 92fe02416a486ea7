from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UTCDateTime, utcnow


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (CheckConstraint("price_fen > 0", name="price_positive"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    # Sent as the unified-order `body` (String(127)), shaped "商家名称-销售商品类目",
    # e.g. 短信平台-短信套餐购买.
    description: Mapped[str] = mapped_column(String(127))
    price_fen: Mapped[int] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
