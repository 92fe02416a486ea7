"""Issue 13: webhook endpoints over the admin API, their secrets, and which URLs are allowed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.events.urls import WebhookUrlRefused, check_webhook_url, delivery_transport
from app.httpclient import tls_context
from tests.helpers import ADMIN, scalar
from tests.hermetic import hermetic_settings

HOOKS = "/api/v1/admin/webhooks"
NEW = {"url": "http://127.0.0.1:9/hooks", "events": ["order.paid", "refund.failed"]}


async def test_an_endpoint_is_created_with_a_secret_shown_once(
    client: httpx.AsyncClient, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await client.post(HOOKS, json=NEW, headers=ADMIN)

    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert (body["url"], body["events"], body["enabled"]) == (
        NEW["url"],
        ["order.paid", "refund.failed"],
        True,
    )
    shown = [
        await client.get(f"{HOOKS}/{body['id']}", headers=ADMIN),
        await client.get(HOOKS, headers=ADMIN),
    ]
    assert all(r.status_code == 200 and secret not in r.text for r in shown)
    assert "secret" not in shown[0].json()
    # Sealed at rest, and never logged.
    stored = await scalar(engine, "SELECT secret FROM webhook_endpoints")
    assert secret not in stored
    assert secret not in caplog.text


async def test_patch_and_delete_change_the_endpoint(client: httpx.AsyncClient) -> None:
    endpoint = (await client.post(HOOKS, json=NEW, headers=ADMIN)).json()
    url = f"{HOOKS}/{endpoint['id']}"

    patched = await client.patch(url, json={"events": ["*"], "enabled": False}, headers=ADMIN)

    assert patched.status_code == 200, patched.text
    assert (patched.json()["events"], patched.json()["enabled"]) == (["*"], False)
    assert (await client.delete(url, headers=ADMIN)).status_code == 204
    assert (await client.get(url, headers=ADMIN)).json()["error"]["code"] == "WEBHOOK_NOT_FOUND"
    assert (await client.delete(url, headers=ADMIN)).status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({**NEW, "events": ["order.shipped"]}, "WEBHOOK_INVALID"),
        ({**NEW, "events": []}, "VALIDATION_ERROR"),
        ({**NEW, "url": "ftp://example.com/x"}, "WEBHOOK_URL_REFUSED"),
        ({**NEW, "secret": "mine"}, "VALIDATION_ERROR"),
    ],
)
async def test_a_bad_endpoint_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, engine: AsyncEngine, body: dict[str, object], code: str
) -> None:
    refused = await client.post(HOOKS, json=body, headers=ADMIN)

    assert (refused.status_code, refused.json()["error"]["code"]) == (422, code)
    assert await scalar(engine, "SELECT count(*) FROM webhook_endpoints") == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/rotate-secret"),
        ("GET", "/deliveries"),
    ],
)
async def test_an_id_past_the_bigint_range_is_a_validation_error(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    # Found by the fuzzing scenario: such an id reached the driver and answered 500.
    url = f"/api/v1/admin/webhooks/{2**63}{path}"

    response = await client.request(method, url, headers=ADMIN, json={})

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_the_webhook_api_needs_the_admin_token(client: httpx.AsyncClient) -> None:
    for answer in (
        await client.post(HOOKS, json=NEW),
        await client.get(HOOKS, headers={"X-Admin-Token": "wrong"}),
        await client.get("/api/v1/admin/events"),
    ):
        assert answer.status_code == 403


async def test_rotating_returns_a_new_secret_and_keeps_the_old_one_for_the_grace_period(
    client: httpx.AsyncClient,
) -> None:
    endpoint = (await client.post(HOOKS, json=NEW, headers=ADMIN)).json()

    rotated = await client.post(f"{HOOKS}/{endpoint['id']}/rotate-secret", headers=ADMIN)

    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] != endpoint["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None


PRODUCTION = {"env": "production"}


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hooks",  # not https
        "https://127.0.0.1/hooks",
        "https://localhost/hooks",
        "https://10.1.2.3/hooks",
        "https://192.168.0.10/hooks",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata: link-local
        "https://[::1]/hooks",
        "https://[fe80::1]/hooks",
    ],
)
async def test_production_refuses_plain_http_and_private_addresses(url: str) -> None:
    with pytest.raises(WebhookUrlRefused):
        await check_webhook_url(url, hermetic_settings(**PRODUCTION))


async def test_production_accepts_public_https_and_a_setting_allows_private_addresses() -> None:
    await check_webhook_url("https://93.184.216.34/hooks", hermetic_settings(**PRODUCTION))
    allowing = hermetic_settings(**PRODUCTION, webhook_allow_private_urls=True)
    await check_webhook_url("https://10.1.2.3/hooks", allowing)
    with pytest.raises(WebhookUrlRefused):
        await check_webhook_url("http://10.1.2.3/hooks", allowing)


class Listener:
    """A local HTTP server that answers 204 to anything and counts the connections it got."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(answer, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    server = Listener()
    await server.start()
    yield server
    await server.stop()


async def deliver(settings: Settings, url: str) -> int:
    limits = httpx.Limits(max_connections=4)
    transport = delivery_transport(settings, tls_context(settings), limits)
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=5) as http:
        return (await http.post(url, content=b"{}")).status_code


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_production_deliveries_never_connect_to_a_private_address(
    listener: Listener, host: str
) -> None:
    # What DNS rebinding does: a name registered while it resolved to a public address later
    # resolves to loopback. The check runs again on every connection a delivery opens.
    with pytest.raises(httpx.ConnectError, match="non-public"):
        await deliver(hermetic_settings(**PRODUCTION), f"http://{host}:{listener.port}/hooks")

    assert listener.connections == 0


async def test_dev_and_the_setting_let_deliveries_reach_private_addresses(
    listener: Listener,
) -> None:
    url = f"http://127.0.0.1:{listener.port}/hooks"
    allowing = hermetic_settings(**PRODUCTION, webhook_allow_private_urls=True)

    assert await deliver(hermetic_settings(), url) == 204
    assert await deliver(allowing, url) == 204
    assert listener.connections == 2
