"""The catalogue: public listing, admin management behind WXPAY_ADMIN_TOKEN."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import ADMIN, add_product


async def test_public_listing_shows_only_active_products(client: httpx.AsyncClient) -> None:
    on_sale = await add_product(client, price_fen=100)
    retired = await add_product(client, price_fen=200)
    await client.post(f"/api/v1/admin/products/{retired}/disable", headers=ADMIN)

    public = (await client.get("/api/v1/products")).json()
    admin = (await client.get("/api/v1/admin/products", headers=ADMIN)).json()

    assert [p["id"] for p in public] == [on_sale]
    assert {p["id"]: p["active"] for p in admin} == {on_sale: True, retired: False}


@pytest.mark.parametrize("headers", [{}, {"X-Admin-Token": "wrong"}, {"X-Admin-Token": ""}])
async def test_admin_endpoints_need_the_admin_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = {"name": "x", "description": "shop-goods", "price_fen": 1}

    added = await client.post("/api/v1/admin/products", json=body, headers=headers)
    listed = await client.get("/api/v1/admin/products", headers=headers)

    assert added.status_code == listed.status_code == 403
    assert added.json()["error"]["code"] == "ADMIN_TOKEN_INVALID"
    assert (await client.get("/api/v1/products")).json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "description": "d", "price_fen": 0},
        {"name": "x", "description": "d", "price_fen": 1.5},
        {"name": "x", "description": "d" * 128, "price_fen": 1},
        {"name": "", "description": "d", "price_fen": 1},
    ],
)
async def test_invalid_products_are_refused(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post("/api/v1/admin/products", json=body, headers=ADMIN)

    assert response.status_code == 422
    assert (await client.get("/api/v1/admin/products", headers=ADMIN)).json() == []


async def test_enabling_an_unknown_product_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/admin/products/999/enable", headers=ADMIN)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "PRODUCT_NOT_FOUND"
