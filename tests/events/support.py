"""Reading the outbox the way a merchant would see it."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.eventdata import render_data


async def outbox(engine: AsyncEngine, event_type: str | None = None) -> list[dict[str, Any]]:
    """The stored events, oldest first, with ``data`` parsed."""
    sql = "SELECT id, public_id, type, order_id, data FROM outbox_events"
    if event_type is not None:
        sql += " WHERE type = :t"
    async with engine.connect() as conn:
        rows = (await conn.execute(text(sql + " ORDER BY id"), {"t": event_type})).all()
    return [{**dict(row._mapping), "data": json.loads(render_data(row.data))} for row in rows]


async def types_of(engine: AsyncEngine) -> list[str]:
    return [event["type"] for event in await outbox(engine)]
