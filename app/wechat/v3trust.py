"""Which keys WeChat Pay's signatures are accepted from (PROTOCOL.md §8.3, §8.6).

WeChat names the key it signed with in ``Wechatpay-Serial``: its public key's ``PUB_KEY_ID_…``
(public-key mode) or a platform certificate's serial (certificate mode). Merchants migrating
from certificates to the public key receive both for a while, so both are accepted, each by its
name. Certificates are downloaded by the v3 client (``GET /v3/certificates``) when a serial is
not known yet: at the first signed message, and again when WeChat rotates to a new certificate.
Old certificates stay trusted until they expire, so messages signed during the overlap of a
rotation verify whichever certificate signed them.

Downloads are limited to ``DOWNLOADS_PER_INTERVAL`` per ``refresh_interval``: anyone can post a
notify naming a made-up serial, and that must not turn into a stream of calls to WeChat. Two, not
one, so that a rotation just after a download is still followed at once; past the limit, a
notify signed with a new certificate is refused and WeChat's next retry is accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import rsa

REFRESH_INTERVAL_SECONDS = 60.0
DOWNLOADS_PER_INTERVAL = 2


@dataclass(frozen=True, slots=True)
class PlatformCertificate:
    """A WeChat Pay platform certificate we checked: its serial (uppercase hex) and key."""

    serial: str
    key: rsa.RSAPublicKey
    not_after: datetime


class WeChatPayTrust:
    """The keys WeChat Pay may sign with, by ``Wechatpay-Serial``."""

    def __init__(
        self,
        public_key: tuple[str, rsa.RSAPublicKey] | None = None,
        *,
        refresh_interval: float = REFRESH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._public_key = public_key
        self._certificates: dict[str, PlatformCertificate] = {}
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._downloads: deque[float] = deque(maxlen=DOWNLOADS_PER_INTERVAL)
        self._downloading = asyncio.Lock()

    @property
    def public_key_id(self) -> str | None:
        return self._public_key[0] if self._public_key else None

    @property
    def request_serial(self) -> str | None:
        """What our requests name in ``Wechatpay-Serial``: the public key's id, else the newest
        certificate we hold (WeChat reads it only for encrypted fields, which we do not send)."""
        if self._public_key:
            return self._public_key[0]
        newest = max(self._certificates.values(), key=lambda c: c.not_after, default=None)
        return newest.serial if newest else None

    def key(self, serial: str) -> rsa.RSAPublicKey | None:
        """The key ``serial`` names, if we trust it now."""
        if self._public_key and serial == self._public_key[0]:
            return self._public_key[1]
        certificate = self._certificates.get(serial.upper())
        if certificate is None or certificate.not_after <= self._now():
            return None
        return certificate.key

    def serials(self) -> list[str]:
        """Every name we accept now (for logs and the doctor)."""
        names = [self._public_key[0]] if self._public_key else []
        return names + sorted(s for s in self._certificates if self.key(s) is not None)

    def due_for_download(self) -> bool:
        recent = [t for t in self._downloads if self._clock() - t < self._refresh_interval]
        return len(recent) < DOWNLOADS_PER_INTERVAL

    async def refresh(
        self, download: Callable[[], Awaitable[Iterable[PlatformCertificate]]]
    ) -> None:
        """Download the certificates unless the limit is reached (one download at a time;
        failures count too)."""
        async with self._downloading:
            if not self.due_for_download():
                return
            self._downloads.append(self._clock())
            self.accept(await download())

    def accept(self, certificates: Iterable[PlatformCertificate]) -> None:
        now = self._now()
        for certificate in certificates:
            self._certificates[certificate.serial.upper()] = certificate
        self._certificates = {s: c for s, c in self._certificates.items() if c.not_after > now}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)
