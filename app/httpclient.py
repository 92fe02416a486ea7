"""The one outbound HTTP client, shared by everything that talks to WeChat.

httpx's API (and its ``MockTransport`` seam for tests) over aiohttp's connection pool: against
an upstream that answers after 100 ms, httpx 0.28's own pool managed ~50 calls/s at 64 in
flight here, the aiohttp transport ~500/s (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from http.cookiejar import Cookie, CookieJar
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from starlette.types import ASGIApp

from app.config import Settings


def build_http_client(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    cert: tuple[str, str] | None = None,
    in_process: InProcessRoute | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with explicit timeouts and limits; create it in a lifespan.

    ``cert`` is a (certificate, key) pair for mutual TLS (WeChat Pay's refund endpoint);
    requests under ``in_process`` go to an app in this process (the dev simulator mount).
    """
    limits = httpx.Limits(
        max_connections=settings.http_max_connections,
        max_keepalive_connections=settings.http_max_connections,
        keepalive_expiry=30,
    )
    timeout = httpx.Timeout(
        connect=settings.http_connect_timeout,
        read=settings.http_read_timeout,
        write=settings.http_read_timeout,
        pool=settings.http_connect_timeout,
    )
    if transport is None:
        transport = _network(limits, tls_context(settings, cert))
    if in_process is not None:
        transport = InProcessTransport(in_process, transport)
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, limits=limits, trust_env=False, cookies=NoCookies()
    )


def _network(limits: httpx.Limits, tls: ssl.SSLContext) -> AiohttpTransport:
    """aiohttp's pool under httpx, with aiohttp's cookie jar replaced by one that keeps
    nothing (as httpx's is: ``NoCookies``)."""

    def session() -> aiohttp.ClientSession:  # made on the first request, inside the loop
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0, keepalive_timeout=limits.keepalive_expiry, ssl=tls
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return AiohttpTransport(limits=limits, verify=tls, trust_env=False, client=session)


class NoCookies(CookieJar):
    """A cookie jar that keeps nothing. WeChat's APIs use no cookies, and one client serves
    every merchant call and every user's login, so none may carry over from one to the next.
    Keeping nothing also spares reading each answer's headers for them (8 us instead of 12-23
    a call here, docs/benchmarks.md)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: Cookie) -> None:
        return None


def tls_context(settings: Settings, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    """What the client trusts (the public CAs httpx uses, plus ``extra_ca_certs``) and, for
    mutual TLS, the certificate it shows. Missing or unreadable files fail here, at start-up."""
    context = httpx.create_ssl_context(trust_env=False)
    if settings.extra_ca_certs:
        context.load_verify_locations(cafile=settings.extra_ca_certs)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


@dataclass(frozen=True, slots=True)
class InProcessRoute:
    """``app``, running in this process, serves every URL under ``base_url``."""

    base_url: str
    app: ASGIApp


class InProcessTransport(httpx.AsyncBaseTransport):
    """Requests under the route's ``base_url`` go straight to its app, with no socket; the
    rest go to ``network``.

    In dev the simulator is mounted in the service, so an address of the service names this
    very process: answering it here means the port the server really listens on (``uvicorn
    --port``) cannot send a call to the wrong place (nowhere, or another developer's server).
    """

    def __init__(self, route: InProcessRoute, network: httpx.AsyncBaseTransport) -> None:
        base = httpx.URL(route.base_url)
        self._origin = (base.scheme, base.host, base.port)
        self._root = base.path.rstrip("/")
        # The app sees the path it would see mounted under base_url (its root_path).
        self._app = httpx.ASGITransport(
            app=route.app,
            root_path=self._root,
            raise_app_exceptions=False,  # a failing app answers 500, as over the network
        )
        self._network = network

    def _serves(self, url: httpx.URL) -> bool:
        same_origin = (url.scheme, url.host, url.port) == self._origin
        return same_origin and f"{url.path}/".startswith(f"{self._root}/")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self._serves(request.url):
            return await self._network.handle_async_request(request)
        # No socket, so no socket timeouts: the read timeout bounds the whole exchange, and an
        # app that hangs (the simulator's upstream_timeout fault) times out as it would remotely.
        read_timeout = request.extensions.get("timeout", {}).get("read")
        try:
            async with asyncio.timeout(read_timeout):
                return await self._app.handle_async_request(request)
        except TimeoutError:
            raise httpx.ReadTimeout("no answer in time (in process)", request=request) from None

    async def aclose(self) -> None:
        await self._network.aclose()
