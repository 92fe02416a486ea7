from __future__ import annotations

from fastapi import APIRouter

from app.auth.schemas import LoginRequest, LoginResponse, SessionResponse
from app.db import utcnow
from app.deps import AuthServiceDep, CurrentUserDep
from app.errors import error_responses

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post(
    "/login",
    response_model=LoginResponse,
    responses=error_responses(401, 403, 422, 429, 502, 503),
    summary="Exchange a wx.login code for a session token",
)
async def login(body: LoginRequest, auth: AuthServiceDep) -> LoginResponse:
    issued = await auth.login(body.code)
    return LoginResponse(token=issued.token, expires_in=issued.expires_in)


@router.get(
    "/session",
    response_model=SessionResponse,
    responses=error_responses(401),
    summary="Check the session token; 401 means call wx.login again",
)
async def session(user: CurrentUserDep) -> SessionResponse:
    remaining = int((user.session_expires_at - utcnow()).total_seconds())
    return SessionResponse(openid=user.openid, expires_in=max(remaining, 0))
