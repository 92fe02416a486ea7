"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import OperationsServiceDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable and migrated to head")
async def readyz(operations: OperationsServiceDep) -> JSONResponse:
    reason, schema = await operations.not_ready()
    if reason is not None:
        return _not_ready(reason)
    return JSONResponse({"status": "ready", "schema": schema})


def _not_ready(reason: str) -> JSONResponse:
    return JSONResponse({"error": {"code": "NOT_READY", "message": reason}}, status_code=503)
