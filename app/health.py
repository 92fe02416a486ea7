"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app.db import DATABASE_UNAVAILABLE
from app.deps import RuntimeDep

router = APIRouter(tags=["health"])

_UNREACHABLE: tuple[type[Exception], ...] = (*DATABASE_UNAVAILABLE, SQLAlchemyError)


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable and migrated to head")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    try:
        async with runtime.db.statement() as tx:
            current = await tx.schema_version()
    except _UNREACHABLE as exc:
        return _not_ready(f"database unreachable: {type(exc).__name__}")
    if current != runtime.schema_head:
        return _not_ready(f"schema at {current}, code expects {runtime.schema_head}")
    return JSONResponse({"status": "ready", "schema": current})


def _not_ready(reason: str) -> JSONResponse:
    return JSONResponse({"error": {"code": "NOT_READY", "message": reason}}, status_code=503)
