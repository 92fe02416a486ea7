"""/docs and /redoc work offline (issue 15, item 8): every script and style they load is
served by this service, none from a CDN. The page rendered in Chromium with no network is in
``tests/test_docs_browser.py`` (``make test-browser``)."""

from __future__ import annotations

import re

import httpx
import pytest

from app.main import create_app
from tests.hermetic import hermetic_settings


@pytest.fixture
async def docs_client() -> httpx.AsyncClient:
    # The routes alone (no lifespan): the docs need neither the database nor WeChat.
    transport = httpx.ASGITransport(app=create_app(hermetic_settings()))
    return httpx.AsyncClient(transport=transport, base_url="http://service.test")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_load_every_asset_from_this_service(
    docs_client: httpx.AsyncClient, page: str
) -> None:
    html = (await docs_client.get(page)).text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)

    assert assets, html[:200]
    assert [a for a in assets if not a.startswith("/")] == []  # no CDN, no other host
    for asset in assets:
        response = await docs_client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 1000, asset  # the real bundle, not a placeholder
    assert (await docs_client.get("/openapi.json")).json()["paths"]
