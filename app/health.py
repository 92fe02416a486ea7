"""Liveness and readiness."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.deps import RuntimeDep

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"

router = APIRouter(tags=["health"])


def schema_head() -> str | None:
    """The newest alembic revision shipped with this code."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_INI.parent / "alembic"))
    return ScriptDirectory.from_config(config).get_current_head()


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable and migrated to head")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    try:
        async with runtime.engine.connect() as conn:
            current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except (SQLAlchemyError, OSError) as exc:
        return _not_ready(f"database unreachable: {type(exc).__name__}")
    if current != runtime.schema_head:
        return _not_ready(f"schema at {current}, code expects {runtime.schema_head}")
    return JSONResponse({"status": "ready", "schema": current})


def _not_ready(reason: str) -> JSONResponse:
    return JSONResponse({"error": {"code": "NOT_READY", "message": reason}}, status_code=503)
