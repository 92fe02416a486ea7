"""An event's bytes, as webhooks carry them and the feed lists them.

What ``data`` says about an order or a refund is rendered by a ``Renderer`` the composition
root passes in (``app.eventdata.render_data``): this package stores and sends events, and
does not import the packages whose changes they report."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from app.events.repository import EventRecord

# An event's stored snapshot in, its ``data`` out (JSON text).
Renderer = Callable[[str], str]


def as_json(data: dict[str, Any]) -> str:
    """Compact and stable: these bytes are stored once and sent as they are."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def event_body(event: EventRecord, render: Renderer) -> bytes:
    """The event as sent and as the feed shows it: the same bytes every time."""
    created = event.created_at.isoformat().replace("+00:00", "Z")
    head = f'{{"id":"{event.public_id}","type":"{event.type}","created_at":"{created}"'
    return f'{head},"sequence":{event.id},"data":{render(event.data)}}}'.encode()
