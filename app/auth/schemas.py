from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LoginRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"code": "0a3Bc1000xYz2Q1"}]})

    code: str = Field(min_length=1, max_length=128, description="The code from wx.login().")


class LoginResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"token": "q3yP...Xw", "expires_in": 86400}]}
    )

    token: str = Field(description="Send as 'Authorization: Bearer <token>'.")
    expires_in: int = Field(description="Seconds until the token expires.")


class SessionResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"openid": "oUpF8u...", "expires_in": 3600}]}
    )

    openid: str
    expires_in: int = Field(description="Seconds the session has left.")


class RevokedSessions(BaseModel):
    openid: str
    revoked: int = Field(description="How many sessions were revoked.")
