"""Where a request really came from."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from fastapi import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(request: Request, trusted_proxies: list[str]) -> str:
    """The client's IP address, for ``spbill_create_ip``.

    ``X-Forwarded-For`` is attacker-controlled (PROTOCOL.md §9.10), so it is read only when the
    connection comes from a configured trusted proxy (an address or a network: an ingress's pods
    change address), and then from the right: the first address that is not itself a trusted
    proxy is the client.
    """
    peer = request.client.host if request.client else "127.0.0.1"
    return forwarded_client(peer, request.headers.get("x-forwarded-for", ""), trusted_proxies)


def forwarded_client(peer: str, forwarded: str, trusted_proxies: Sequence[str]) -> str:
    """``client_ip`` from the connection's peer address and its ``X-Forwarded-For``."""
    networks = proxy_networks(tuple(trusted_proxies))
    if not _is_trusted(peer, networks):
        return _valid_or(peer, "127.0.0.1")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, networks):
            return _valid_or(hop, peer)
    return _valid_or(peer, "127.0.0.1")


@lru_cache(maxsize=8)
def proxy_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """``WXPAY_TRUSTED_PROXIES`` entries as networks: an address is a network of one, and host
    bits are ignored (``10.1.2.3/8`` is ``10.0.0.0/8``). Raises ``ValueError`` on anything
    else. Cached: a process has one setting, and this runs on every request."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _is_trusted(candidate: str, networks: tuple[Network, ...]) -> bool:
    address = _parsed(candidate)
    # Not an address (a unix socket, junk in the header): never a proxy.
    return address is not None and any(address[0] in network for network in networks)


def _valid_or(candidate: str, fallback: str) -> str:
    address = _parsed(candidate)
    return fallback if address is None else address[1]


def _parsed(candidate: str) -> tuple[Address, str] | None:
    # No address is longer than 64 characters (an IPv6 one with an IPv4 tail and a zone is
    # well under): longer text is parsed (and refused) without taking a place in the cache.
    return _address(candidate) if len(candidate) <= 64 else _address.__wrapped__(candidate)


@lru_cache(maxsize=4096)
def _address(candidate: str) -> tuple[Address, str] | None:
    """``candidate`` parsed, with its canonical text; None if it is not an address. Cached:
    the same few peers (clients, an ingress) come back request after request, and parsing one
    costs more than the rest of this module's work on a request. Bounded, so addresses a
    client invents in X-Forwarded-For only push older ones out."""
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    return address, str(address)
