"""The simulator's FastAPI app: WeChat's own paths, the control API and the cashier page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from app.simulator.control import router as control_router
from app.simulator.page import router as page_router
from app.simulator.routes import router as wechat_router
from app.simulator.v3routes import router as v3_router

if TYPE_CHECKING:
    from app.simulator.core import Simulator


def build_app(simulator: Simulator, *, standalone: bool) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with simulator:
            yield

    app = FastAPI(
        title="Local WeChat (simulator)",
        description="code2session, WeChat Pay v2 and v3, notify delivery, and a control API.",
        lifespan=lifespan if standalone else None,
        docs_url="/_control/docs",
        openapi_url="/_control/openapi.json",
        redoc_url=None,
    )
    app.state.simulator = simulator
    app.include_router(wechat_router)
    if simulator.v3_keys is not None:
        app.include_router(v3_router)
    app.include_router(control_router)
    app.include_router(page_router)
    return app
