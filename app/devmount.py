"""Guards around the WeChat simulator mounted at ``/sim`` in development.

- One process only. Each uvicorn worker would mount a simulator of its own, with its own
  state: a login code minted through one is unknown to the other, and logins fail at random.
  uvicorn does not tell the app how many workers it runs, so the mount takes a lock file; a
  second process that cannot take it refuses to start. It never falls back to the real WeChat
  hosts. Within one process (the test suite builds many apps) the lock is shared and counted.
- Notifies go only to this service. The simulator POSTs to whatever ``notify_url`` an order
  names, for a day of retries: mounted in a service, that would make the server call any
  address a caller chooses. Other hosts must be listed in ``WXPAY_SIMULATOR_NOTIFY_HOSTS``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.config import ConfigError, Settings

_held: dict[str, tuple[int, int]] = {}  # resolved path -> (file descriptor, holders)
_held_guard = threading.Lock()

ONE_PROCESS_ONLY = (
    "the WeChat simulator mounted at /sim is already served by another process ({path}). "
    "Each worker would have a simulator of its own, and logins would fail at random. Run one "
    "worker, or run the standalone simulator (python -m app.simulator --port 9100) and point "
    "WXPAY_PAY_API_BASE and WXPAY_MINIPROGRAM_API_BASE at it with WXPAY_SIMULATOR_MOUNT=false."
)


@contextlib.contextmanager
def mount_lock(path: str) -> Iterator[None]:
    """Hold the simulator mount's lock file for this process while the block runs;
    ``ConfigError`` naming the standalone simulator when another process holds it."""
    key = str(Path(path).resolve())
    _acquire(key)
    try:
        yield
    finally:
        _release(key)


def _acquire(key: str) -> None:
    with _held_guard:
        if key in _held:
            fd, holders = _held[key]
            _held[key] = (fd, holders + 1)
            return
        Path(key).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(ONE_PROCESS_ONLY.format(path=key)) from None
        _held[key] = (fd, 1)


def _release(key: str) -> None:
    with _held_guard:
        fd, holders = _held[key]
        if holders > 1:
            _held[key] = (fd, holders - 1)
            return
        del _held[key]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass(frozen=True, slots=True)
class NotifyTargets:
    """This service's own origins (host and port), and other hosts allowed on any port."""

    origins: frozenset[tuple[str, int | None]]
    hosts: frozenset[str]

    def allows(self, url: httpx.URL) -> bool:
        return (url.host, url.port) in self.origins or url.host in self.hosts


def notify_targets(settings: Settings) -> NotifyTargets:
    """Where the mounted simulator may send notifies: this service's own addresses (its base
    URL and configured notify URLs) and the hosts ``WXPAY_SIMULATOR_NOTIFY_HOSTS`` lists."""
    own = (
        settings.self_base_url,
        settings.pay_notify_url,
        settings.refund_notify_address,
        settings.v3_notify_address,
        settings.v3_refund_notify_address,
    )
    origins = {(httpx.URL(url).host, httpx.URL(url).port) for url in own if url}
    listed = {host.lower() for host in settings.simulator_notify_hosts}
    return NotifyTargets(frozenset(origins), frozenset(listed))


class AllowedHostsTransport(httpx.AsyncBaseTransport):
    """``network`` for the allowed targets only; any other fails as an unreachable host would."""

    def __init__(self, network: httpx.AsyncBaseTransport, targets: NotifyTargets) -> None:
        self._network = network
        self._targets = targets

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self._targets.allows(request.url):
            raise httpx.ConnectError(
                f"{request.url.host} is not this service; list it in "
                "WXPAY_SIMULATOR_NOTIFY_HOSTS to let the mounted simulator notify it",
                request=request,
            )
        return await self._network.handle_async_request(request)

    async def aclose(self) -> None:
        await self._network.aclose()
