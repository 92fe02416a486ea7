"""Which webhook URLs a merchant may register, and which addresses deliveries may reach.

In production the URL must be ``https://`` and its host must resolve only to public
addresses: a webhook is a request this service makes on the caller's say-so, and one aimed
at loopback, link-local (cloud metadata at 169.254.169.254) or a private network would reach
what the internet must not. ``WXPAY_WEBHOOK_ALLOW_PRIVATE_URLS`` lifts the address rule.

The rule is checked twice: when the URL is registered, with a clear error, and again on every
connection a delivery opens (``PublicAddressesOnly``), because a name that resolved to a public
address at registration can resolve to 127.0.0.1 an hour later (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

from app.config import Settings

logger = logging.getLogger(__name__)


class WebhookUrlRefused(ValueError):
    """The URL may not be used; the message says why."""


async def check_webhook_url(url: str, settings: Settings) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookUrlRefused("the URL must be an absolute http:// or https:// URL")
    if not settings.is_production:
        return
    if parts.scheme != "https":
        raise WebhookUrlRefused("in production the URL must be https://")
    if not addresses_checked(settings):
        return
    for address in await _addresses(parts.hostname, parts.port or 443):
        if not _public(address):
            raise WebhookUrlRefused(
                f"{parts.hostname} resolves to {address}, which is not a public address "
                "(set WXPAY_WEBHOOK_ALLOW_PRIVATE_URLS to allow it)"
            )


def addresses_checked(settings: Settings) -> bool:
    """Whether webhook hosts must resolve to public addresses only (production, unless
    ``WXPAY_WEBHOOK_ALLOW_PRIVATE_URLS``): at registration and on every connection."""
    return settings.is_production and not settings.webhook_allow_private_urls


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_global and not ip.is_multicast


async def _addresses(host: str, port: int) -> list[str]:
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookUrlRefused(f"{host} does not resolve") from exc
    return sorted({str(info[4][0]) for info in found})


class PublicAddressesOnly(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only where the host resolves to public addresses
    alone: the name is resolved here, checked, and the connection made to the checked address
    (TLS still verifies the certificate against the name)."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await _addresses(host, port)
        except WebhookUrlRefused as exc:
            raise httpcore.ConnectError(str(exc)) from None
        refused = [address for address in addresses if not _public(address)]
        if refused or not addresses:
            logger.warning("webhook to %s not sent: it resolves to %s", host, ", ".join(refused))
            raise httpcore.ConnectError(f"{host} resolves to a non-public address")
        failed: Exception | None = None
        for address in sorted(addresses, key=lambda a: ":" in a):  # IPv4 first
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                failed = exc
        assert failed is not None
        raise failed

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are delivered over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def delivery_transport(
    settings: Settings, verify: ssl.SSLContext, limits: httpx.Limits
) -> httpx.AsyncHTTPTransport:
    """The transport deliveries use: in production (unless private addresses are allowed)
    every connection goes through ``PublicAddressesOnly``."""
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits, trust_env=False)
    if addresses_checked(settings):
        # httpx takes no network backend, so its pool is rebuilt with ours, and the same limits.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicAddressesOnly(),
        )
    return transport
