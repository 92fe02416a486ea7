"""Where a request really came from."""

from __future__ import annotations

import ipaddress

from fastapi import Request


def client_ip(request: Request, trusted_proxies: list[str]) -> str:
    """The client's IP address, for ``spbill_create_ip``.

    ``X-Forwarded-For`` is attacker-controlled (PROTOCOL.md §9.10), so it is read only when the
    connection comes from a configured trusted proxy, and then from the right: the first
    address that is not itself a trusted proxy is the client.
    """
    peer = request.client.host if request.client else "127.0.0.1"
    return forwarded_client(peer, request.headers.get("x-forwarded-for", ""), trusted_proxies)


def forwarded_client(peer: str, forwarded: str, trusted_proxies: list[str]) -> str:
    """``client_ip`` from the connection's peer address and its ``X-Forwarded-For``."""
    if peer not in trusted_proxies:
        return _valid_or(peer, "127.0.0.1")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return _valid_or(hop, peer)
    return _valid_or(peer, "127.0.0.1")


def _valid_or(candidate: str, fallback: str) -> str:
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return fallback
