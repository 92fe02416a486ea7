from __future__ import annotations

from fastapi import APIRouter, Response

from app.auth.schemas import LoginRequest, LoginResponse, RevokedSessions, SessionResponse
from app.db import utcnow
from app.deps import AdminDep, AuthServiceDep, ClientIpDep, CurrentUserDep
from app.errors import error_responses
from app.leanroute import LeanRoute

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], route_class=LeanRoute)
admin_router = APIRouter(prefix="/api/v1/admin/users", tags=["admin"], dependencies=[AdminDep])


@router.post(
    "/login",
    response_model=LoginResponse,
    responses=error_responses(401, 403, 422, 429, 502, 503),
    summary="Exchange a wx.login code for a session token",
)
async def login(
    body: LoginRequest, response: Response, auth: AuthServiceDep, ip: ClientIpDep
) -> LoginResponse:
    issued = await auth.login(body.code, ip)
    # A bearer token: no cache (a proxy's, the mini-program's HTTP layer) may keep it.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return LoginResponse(token=issued.token, expires_in=issued.expires_in)


@router.post(
    "/logout",
    status_code=204,
    responses=error_responses(401),
    summary="Revoke this session token (other sessions of the user stay)",
)
async def logout(user: CurrentUserDep, auth: AuthServiceDep) -> Response:
    await auth.logout(user)
    return Response(status_code=204)


@router.get(
    "/session",
    response_model=SessionResponse,
    responses=error_responses(401),
    summary="Check the session token; 401 means call wx.login again",
)
async def session(user: CurrentUserDep) -> SessionResponse:
    remaining = int((user.session_expires_at - utcnow()).total_seconds())
    return SessionResponse(openid=user.openid, expires_in=max(remaining, 0))


@admin_router.delete(
    "/{openid}/sessions",
    response_model=RevokedSessions,
    responses=error_responses(403, 404),
    summary="Revoke every session of a user",
)
async def revoke_sessions(openid: str, auth: AuthServiceDep) -> RevokedSessions:
    return RevokedSessions(openid=openid, revoked=await auth.revoke_sessions(openid))
