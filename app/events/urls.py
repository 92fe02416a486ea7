"""Which webhook URLs a merchant may register.

In production the URL must be ``https://`` and its host must resolve only to public
addresses: a webhook is a request this service makes on the caller's say-so, and one aimed
at loopback, link-local (cloud metadata at 169.254.169.254) or a private network would reach
what the internet must not. ``WXPAY_WEBHOOK_ALLOW_PRIVATE_URLS`` lifts the address rule.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from app.config import Settings


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
    if settings.webhook_allow_private_urls:
        return
    for address in await _addresses(parts.hostname, parts.port or 443):
        if not _public(address):
            raise WebhookUrlRefused(
                f"{parts.hostname} resolves to {address}, which is not a public address "
                "(set WXPAY_WEBHOOK_ALLOW_PRIVATE_URLS to allow it)"
            )


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_global and not ip.is_multicast


async def _addresses(host: str, port: int) -> list[str]:
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookUrlRefused(f"{host} does not resolve") from exc
    return sorted({str(info[4][0]) for info in found})
