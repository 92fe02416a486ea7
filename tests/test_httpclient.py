"""The outbound HTTP client: whom it trusts, and the calls it answers in this process."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.config import Settings
from app.httpclient import InProcessRoute, build_http_client
from tests.plugins.simulator import ServerThread
from tests.plugins.tls import Pki, TlsSimulator


async def test_a_server_signed_by_the_extra_ca_is_trusted_only_with_the_setting(
    settings: Settings, tls_simulator: TlsSimulator, pki: Pki
) -> None:
    url = tls_simulator.handle.url("/_control/orders")
    trusting = settings.model_copy(update={"extra_ca_certs": str(pki.ca_cert)})

    async with build_http_client(trusting) as http:
        answered = await http.get(url)
    async with build_http_client(settings) as http:
        with pytest.raises(httpx.TransportError, match="certificate verify failed"):
            await http.get(url)

    assert answered.status_code == 200


def test_an_unreadable_extra_ca_file_fails_at_start_up(settings: Settings) -> None:
    missing = settings.model_copy(update={"extra_ca_certs": "/nonexistent/ca.pem"})

    with pytest.raises(FileNotFoundError):
        build_http_client(missing)


# --- calls answered in this process (the dev simulator mount) --------------------------------


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the path and root_path it was given, or hangs on /slow."""
    if scope["path"].endswith("/slow"):
        await asyncio.sleep(60)
    body = f"{scope['root_path']} {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _in_process_client(settings: Settings) -> httpx.AsyncClient:
    network = httpx.MockTransport(lambda request: httpx.Response(299, text="network"))
    route = InProcessRoute("http://127.0.0.1:8000/sim", _hello)
    return build_http_client(settings, transport=network, in_process=route)


async def test_only_urls_under_the_route_are_answered_in_process(settings: Settings) -> None:
    async with _in_process_client(settings) as http:
        mounted = await http.get("http://127.0.0.1:8000/sim/pay/orderquery")
        elsewhere = [
            await http.get(url)
            for url in (
                "http://127.0.0.1:8000/simulator/pay",  # shares the text, not the path
                "http://127.0.0.1:8001/sim/pay",
                "https://127.0.0.1:8000/sim/pay",
                "http://localhost:8000/sim/pay",
            )
        ]

    assert (mounted.status_code, mounted.text) == (200, "/sim /sim/pay/orderquery")
    assert {(r.status_code, r.text) for r in elsewhere} == {(299, "network")}


async def test_an_in_process_app_that_hangs_times_out_like_a_remote_one(
    settings: Settings,
) -> None:
    quick = settings.model_copy(update={"http_read_timeout": 0.05})

    async with _in_process_client(quick) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("http://127.0.0.1:8000/sim/slow")


# --- cookies ----------------------------------------------------------------------------------


async def test_a_cookie_wechat_sets_is_never_sent_back(settings: Settings) -> None:
    """One client serves every merchant call and every user's login, over real HTTP (aiohttp's
    pool under httpx): a ``Set-Cookie`` in one answer must not ride along on the next call."""
    received: list[Headers] = []

    async def answer(request: Request) -> Response:
        received.append(request.headers)
        return Response("ok", headers={"Set-Cookie": "session=abc; Path=/"})

    server = ServerThread(Starlette(routes=[Route("/{path:path}", answer)]))
    port = server.start().rsplit(":", 1)[1]
    try:
        async with build_http_client(settings) as http:
            # A host name: aiohttp's own jar would keep nothing for an IP address anyway.
            first = await http.get(f"http://localhost:{port}/pay/unifiedorder")
            await http.get(f"http://localhost:{port}/pay/orderquery")
    finally:
        server.stop()

    assert first.headers["set-cookie"] == "session=abc; Path=/"  # the answer still shows it
    assert len(received) == 2
    assert all("cookie" not in headers for headers in received)
    assert not http.cookies
