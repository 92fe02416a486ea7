from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from app.db import MAX_BIGINT
from app.orders.states import OrderStatus


class CreateOrderRequest(BaseModel):
    """What the client may say about an order: what and how many, never a price."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"product_id": 1, "quantity": 1}]}
    )

    product_id: int = Field(gt=0, le=MAX_BIGINT)
    quantity: int = Field(default=1, ge=1, le=999)


class PayParams(BaseModel):
    """Pass these to wx.requestPayment as they are."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "timeStamp": "1700000000",
                    "nonceStr": "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6",
                    "package": "prepay_id=wx20231115061320123456789abcdef0000",
                    "signType": "MD5",
                    "paySign": "8F0E4CC1AEF70CF9C3B544AC9E4813C5",
                }
            ]
        }
    )

    timeStamp: str
    nonceStr: str
    package: str
    signType: str
    paySign: str


class OrderOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "out_trade_no": "20261127031500K3J9QX2M7ZPA",
                    "status": "NOTPAY",
                    "product_id": 1,
                    "quantity": 1,
                    "total_fee": 990,
                    "description": "短信平台-短信套餐购买",
                    "created_at": "2026-11-27T03:15:00Z",
                    "time_expire": "2026-11-27T03:45:00Z",
                    "paid_at": None,
                    "transaction_id": None,
                    "refunded_fee": 0,
                }
            ]
        }
    )

    out_trade_no: str
    status: OrderStatus
    product_id: int
    quantity: int
    total_fee: int = Field(description="Amount in fen.")
    description: str
    created_at: dt.datetime
    time_expire: dt.datetime
    paid_at: dt.datetime | None
    transaction_id: str | None
    refunded_fee: int = Field(description="Fen refunded or being refunded.")


class OrderWithPayParams(OrderOut):
    pay_params: PayParams


class OrderPage(BaseModel):
    items: list[OrderOut]
    limit: int
    offset: int
