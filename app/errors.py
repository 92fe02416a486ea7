"""Domain errors and the one handler that turns them into ``{"error": {"code", "message"}}``.

Services raise these, never ``HTTPException``; routers stay free of status-code decisions.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db import DATABASE_UNAVAILABLE
from app.wechat.errors import WeChatRejected, WeChatUnavailable

logger = logging.getLogger(__name__)

RELOGIN_HINT = "Call wx.login again and exchange the new code at /api/v1/auth/login."


class AppError(Exception):
    """Base of every error a client may see; ``code`` is stable, ``message`` is for humans."""

    status = 500
    code = "INTERNAL_ERROR"
    message = "Internal error."
    retry_after: int | None = None  # seconds, sent as Retry-After

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.message
        self.code = code or self.code
        super().__init__(self.message)


class Unauthorized(AppError):
    status = 401


class SessionMissing(Unauthorized):
    code = "SESSION_MISSING"
    message = f"No session token was sent. {RELOGIN_HINT}"


class SessionInvalid(Unauthorized):
    code = "SESSION_INVALID"
    message = f"The session token is not recognised. {RELOGIN_HINT}"


class SessionExpired(Unauthorized):
    code = "SESSION_EXPIRED"
    message = f"The session has expired. {RELOGIN_HINT}"


class InvalidLoginCode(Unauthorized):
    code = "INVALID_CODE"
    message = "WeChat did not accept the login code; call wx.login again for a new one."


class AdminForbidden(AppError):
    status = 403
    code = "ADMIN_TOKEN_INVALID"
    message = "A valid admin token is required."


class LoginBlocked(AppError):
    status = 403
    code = "LOGIN_BLOCKED"
    message = "WeChat risk control blocked this login."


class NotFound(AppError):
    status = 404
    code = "NOT_FOUND"
    message = "Not found."


class Conflict(AppError):
    status = 409
    code = "CONFLICT"
    message = "The request conflicts with the current state."


class RateLimited(AppError):
    """WeChat's own limit: code2session errcode 45011, "api minute-quota reach limit
    mustslower retry next minute" (PROTOCOL.md §1.2). Its quota is per minute, so the next
    minute starts within 60 s; like every 429 here, the answer says when in ``Retry-After``."""

    status = 429
    code = "RATE_LIMITED"
    message = "WeChat rate limit reached; retry in a minute."
    retry_after = 60


class TooManyRequests(AppError):
    """Our own limit (per IP, per order, overall), not WeChat's."""

    status = 429
    code = "RATE_LIMITED"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many requests; retry in {retry_after} s.")
        self.retry_after = retry_after


class UpstreamRejected(AppError):
    status = 502
    code = "WECHAT_REJECTED"
    message = "WeChat rejected the request."


class UpstreamUnavailable(AppError):
    status = 503
    code = "WECHAT_UNAVAILABLE"
    message = "WeChat is unavailable right now; retry shortly."


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    """The shape of every non-2xx response."""

    error: ErrorBody


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    response = error_response(exc.status, exc.code, exc.message)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def upstream_rejected(exc: WeChatRejected) -> UpstreamRejected:
    """WeChat's final refusal as a client error, passing WeChat's own reason through."""
    code = f" ({exc.err_code})" if exc.err_code else ""
    return UpstreamRejected(f"WeChat rejected the request{code}: {exc.reason}")


def upstream_unavailable(exc: WeChatUnavailable) -> UpstreamUnavailable:
    return UpstreamUnavailable(f"WeChat is unavailable right now ({exc.message}); retry shortly.")


async def _wechat_rejected(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WeChatRejected)
    error = upstream_rejected(exc)
    return error_response(error.status, error.code, error.message)


async def _wechat_unavailable(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WeChatUnavailable)
    error = upstream_unavailable(exc)
    return error_response(error.status, error.code, error.message)


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    logger.error("database unavailable: %s", type(exc).__name__)
    return error_response(503, "DATABASE_UNAVAILABLE", "The service is unavailable; retry shortly.")


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return error_response(422, "VALIDATION_ERROR", f"{where}: {first.get('msg', 'invalid')}")


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    response = error_response(exc.status_code, code, str(exc.detail))
    # The router's own headers: a 405 names the methods the path takes (RFC 9110 §15.5.6).
    response.headers.update(exc.headers or {})
    return response


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "Internal error.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(WeChatRejected, _wechat_rejected)
    app.add_exception_handler(WeChatUnavailable, _wechat_unavailable)
    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries declaring the error envelope for ``statuses``."""
    return {status: {"model": ErrorEnvelope} for status in statuses}
