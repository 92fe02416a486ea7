"""``python -m app.cli doctor``: is this configuration ready to take payments?

Each check gives a finding; the report lists them all (one failure does not hide the next) and
the exit status is 0 only when every finding holds. What is checked:

- the configuration (production's refusals included);
- the database answers and its schema is at the head this code expects;
- WeChat Pay answers a signed order query for an order number nobody used: "no such order"
  (v2 ``ORDERNOTEXIST``, v3 404 ``ORDER_NOT_EXIST``) proves the address, the merchant id and
  the signing key, since WeChat checks the signature before it looks the order up. Both answers
  must carry WeChat Pay's signature, verified: any host can say "not found";
- the merchant certificate, its key, WeChat Pay's public key and extra CA certificates load, fit
  together, and when the certificates expire; in v3 platform-certificate mode (no public key
  configured), the certificates WeChat Pay lists and when they expire;
- the notify URLs are https (in production) and their hosts resolve.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PublicKeyTypes,
)
from sqlalchemy.exc import SQLAlchemyError

from app.adapters.v3setup import V3ConfigError, build_v3_gateway
from app.adapters.wechatpay_v3 import UnprovenRejection, WeChatPayV3Gateway
from app.config import ConfigError, Settings
from app.db import DATABASE_UNAVAILABLE
from app.gateway import ApiVersion, PaymentGateway, WeChatRejected, WeChatUnavailable
from app.httpclient import build_http_client
from app.runtime import Runtime, build_runtime
from app.wechat.v3 import load_private_key, load_public_key

RENEW_WITHIN = dt.timedelta(days=30)
RESOLVE_SECONDS = 5.0
_UNREACHABLE: tuple[type[Exception], ...] = (*DATABASE_UNAVAILABLE, SQLAlchemyError)


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    ok: bool
    detail: str
    warning: bool = False  # holds, but someone should look (a certificate expiring soon)

    def line(self) -> str:
        mark = "FAIL" if not self.ok else "warn" if self.warning else "ok"
        return f"{mark:<5} {self.check}: {self.detail}"


def report(findings: list[Finding]) -> tuple[str, bool]:
    """The printed report, and whether everything holds."""
    failed = sum(not f.ok for f in findings)
    verdict = "everything holds" if not failed else f"{failed} check(s) failed"
    return "\n".join([*(f.line() for f in findings), verdict]), not failed


async def diagnose(settings: Settings) -> list[Finding]:
    """Every check, in order; none stops the others."""
    findings = [configuration(settings), *key_material(settings)]
    # One attempt per call: the doctor reports what it sees, it does not insist.
    settings = settings.model_copy(update={"wechat_max_attempts": 1})
    async with AsyncExitStack() as stack:
        try:
            runtime = await build_runtime(settings, stack)
        except (ConfigError, V3ConfigError, ValueError, OSError) as exc:
            return [*findings, Finding("service", False, f"cannot be built: {exc}")]
        findings.append(await database(runtime))
        v3 = _v3_gateway(settings, stack)
        findings += [await wechat_pay(gateway) for gateway in _gateways(runtime, v3)]
        if v3 is not None and settings.v3_certificate_mode:
            findings.append(await platform_certificates(v3))
    findings += await notify_urls(settings)
    return findings


def configuration(settings: Settings) -> Finding:
    try:
        settings.check_production()
    except ConfigError as exc:
        return Finding("configuration", False, str(exc))
    if settings.is_production:
        return Finding("configuration", True, f"production, WeChat Pay {settings.api_version}")
    return Finding(
        "configuration", True, f"dev (development defaults allowed), {settings.api_version}"
    )


async def database(runtime: Runtime) -> Finding:
    try:
        async with runtime.db.statement() as tx:
            await tx.ping()
    except _UNREACHABLE as exc:
        return Finding("database", False, f"does not answer ({type(exc).__name__})")
    try:
        async with runtime.db.statement() as tx:
            current = await tx.schema_version()
    # It answers, so any failure here (no alembic_version table: each driver names that its own
    # way) means there is no schema this code can read.
    except Exception as exc:
        detail = f"answers, but has no readable schema ({type(exc).__name__}): run migrations"
        return Finding("database", False, detail)
    if current != runtime.schema_head:
        detail = f"schema at {current}, this code needs {runtime.schema_head}: run migrations"
        return Finding("database", False, detail)
    return Finding("database", True, f"answers; schema at head ({current})")


def _v3_gateway(settings: Settings, stack: AsyncExitStack) -> WeChatPayV3Gateway | None:
    """The doctor's own v3 gateway, built as the runtime builds its own, or None without v3.
    The runtime's sits behind the metrics wrapper, which offers only the payment-gateway port:
    neither the strict query below nor the platform certificates."""
    if settings.v3_missing:
        return None
    http = build_http_client(settings)
    stack.push_async_callback(http.aclose)
    return build_v3_gateway(settings, http)


def _gateways(runtime: Runtime, v3: WeChatPayV3Gateway | None) -> list[PaymentGateway]:
    """Every configured API version, the one new orders use first; v3 as the doctor's own."""
    current = runtime.gateways.current
    others = [runtime.gateways.configured(v) for v in ApiVersion if v is not current.version]
    found = [current, *(g for g in others if g is not None)]
    return [v3 if v3 is not None and g.version is ApiVersion.V3 else g for g in found]


async def wechat_pay(gateway: PaymentGateway) -> Finding:
    check = f"WeChat Pay {gateway.version.value}"
    made_up = "DOCTOR" + secrets.token_hex(12).upper()  # 30 characters, never an order of ours
    # "No such order" only counts when it is provably WeChat Pay's (signed: v2's ORDERNOTEXIST
    # in a signed answer, v3's signed 404 ORDER_NOT_EXIST); anything else raises.
    try:
        answer = await gateway.query(made_up)
    except WeChatRejected as exc:
        return Finding(check, False, f"answered, but refused the signed query: {exc}")
    except UnprovenRejection as exc:
        return Finding(check, False, f"answered, but not as WeChat Pay: {exc}")
    except WeChatUnavailable as exc:
        return Finding(check, False, f"does not answer: {exc}")
    if answer is not None:
        return Finding(check, False, f"reports an order {made_up} that was never placed")
    return Finding(check, True, "answers a signed query (order not found, as it should be)")


def key_material(settings: Settings) -> list[Finding]:
    findings = []
    if settings.mch_cert_path and settings.mch_key_path:
        findings.append(merchant_certificate(settings.mch_cert_path, settings.mch_key_path))
    elif settings.is_production and settings.api_version == "v2":
        findings.append(
            Finding("merchant certificate", True, "not set: v2 refunds need it", warning=True)
        )
    if settings.api_version == "v3" or not settings.v3_missing:
        findings += v3_keys(settings)
    if settings.extra_ca_certs:
        findings.append(ca_certificates(settings.extra_ca_certs))
    return findings


def merchant_certificate(cert_path: str, key_path: str) -> Finding:
    check = "merchant certificate"
    try:
        certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return Finding(check, False, f"cannot be read ({type(exc).__name__}: {exc})")
    if _public_der(key.public_key()) != _public_der(certificate.public_key()):
        return Finding(check, False, "WXPAY_MCH_KEY_PATH is not the key of WXPAY_MCH_CERT_PATH")
    ends = certificate.not_valid_after_utc
    return _expiry(check, ends, f"serial {certificate.serial_number:X}")


def v3_keys(settings: Settings) -> list[Finding]:
    if settings.v3_missing:
        return [Finding("v3 keys", False, "missing: " + ", ".join(settings.v3_missing))]
    assert settings.merchant_private_key_path
    path = settings.merchant_private_key_path
    findings = [_key("v3 merchant private key", path, load_private_key)]
    # Without a public key, WeChat Pay is verified with its platform certificates, which are
    # downloaded: checked once the service is built (``platform_certificates``).
    if settings.wechatpay_public_key_path:
        path = settings.wechatpay_public_key_path
        findings.append(_key("WeChat Pay public key", path, load_public_key))
    return findings


async def platform_certificates(gateway: WeChatPayV3Gateway) -> Finding:
    check = "WeChat Pay platform certificates"
    try:
        certificates = await gateway.platform_certificates()
    except (WeChatRejected, WeChatUnavailable) as exc:
        return Finding(check, False, f"cannot be downloaded: {exc}")
    if not certificates:
        return Finding(check, False, "WeChat Pay lists none: its signatures cannot be verified")
    listed = ", ".join(f"{c.serial} to {c.not_after:%Y-%m-%d}" for c in certificates)
    # Signatures verify while any certificate holds, and an older one lapsing during a rotation's
    # overlap is expected (§8.6): the one that matters is the last to expire.
    ends = max(c.not_after for c in certificates)
    return _expiry(check, ends, f"{len(certificates)} listed ({listed}); the last")


def _key(check: str, path: str, load: Callable[[bytes], object]) -> Finding:
    try:
        load(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        return Finding(check, False, f"cannot be read ({type(exc).__name__}: {exc})")
    return Finding(check, True, "loads (an RSA key has no expiry)")


def ca_certificates(path: str) -> Finding:
    try:
        certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        return Finding("extra CA certificates", False, f"cannot be read ({type(exc).__name__})")
    ends = min(c.not_valid_after_utc for c in certificates)
    return _expiry("extra CA certificates", ends, f"{len(certificates)} certificate(s)")


def _expiry(check: str, ends: dt.datetime, what: str) -> Finding:
    left = ends - dt.datetime.now(dt.UTC)
    when = f"{what}, expires {ends:%Y-%m-%d} ({left.days} days)"
    if left <= dt.timedelta(0):
        return Finding(check, False, f"{what}, EXPIRED on {ends:%Y-%m-%d}")
    return Finding(check, True, when, warning=left < RENEW_WITHIN)


def _public_der(key: PublicKeyTypes | CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _notify_addresses(settings: Settings) -> dict[str, str | None]:
    addresses: dict[str, str | None] = {
        "WXPAY_NOTIFY_URL": settings.pay_notify_url,
        "WXPAY_REFUND_NOTIFY_URL": settings.refund_notify_address,
    }
    if not settings.v3_missing:
        addresses["WXPAY_V3_NOTIFY_URL"] = settings.v3_notify_address
        addresses["WXPAY_V3_REFUND_NOTIFY_URL"] = settings.v3_refund_notify_address
    return addresses


async def notify_urls(settings: Settings) -> list[Finding]:
    return [
        await _notify_url(name, url, settings.is_production)
        for name, url in _notify_addresses(settings).items()
    ]


async def _notify_url(name: str, url: str | None, production: bool) -> Finding:
    if url is None:
        return Finding(name, True, "unset: WeChat uses the URL set on the merchant platform")
    parts = urlsplit(url)
    if parts.scheme != "https" and production:
        return Finding(name, False, f"{url} is not https")
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443)
    except (OSError, TimeoutError) as exc:
        return Finding(name, False, f"{parts.hostname} does not resolve ({type(exc).__name__})")
    if parts.scheme != "https":
        return Finding(name, True, f"{url} resolves; plain http, allowed in dev", warning=True)
    return Finding(name, True, f"{url} resolves")
