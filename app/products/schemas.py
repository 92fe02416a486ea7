from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.wechat.xmlcodec import xml_can_carry


class ProductOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "name": "短信套餐 100 条",
                    "description": "短信平台-短信套餐购买",
                    "price_fen": 990,
                    "active": True,
                }
            ]
        },
    )

    id: int
    name: str
    description: str
    price_fen: int = Field(description="Price in fen (1/100 CNY).")
    active: bool


class ProductIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "短信套餐 100 条",
                    "description": "短信平台-短信套餐购买",
                    "price_fen": 990,
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(
        min_length=1, max_length=127, description="Shown on the WeChat bill (unified-order body)."
    )
    price_fen: int = Field(gt=0, le=100_000_000, description="Price in fen.")

    @field_validator("name", "description")
    @classmethod
    def _xml_safe(cls, value: str) -> str:
        # The description becomes the unified-order body: XML must be able to carry it.
        if not xml_can_carry(value) or not value.strip():
            raise ValueError("must be visible text without control characters")
        return value
