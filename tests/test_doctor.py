"""``python -m app.cli doctor`` (issue 15, operations): a readable report, exit 0 only when
everything holds. WeChat is the simulator over real HTTP: a signed query for an order nobody
placed must come back "no such order" (PROTOCOL.md §6.1 ``ORDERNOTEXIST``; §8.1 v3: 404
``ORDER_NOT_EXIST``), with WeChat Pay's signature (§8.3)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.cli import doctor
from app.config import Settings
from app.simulator.v3files import DevMaterial
from app.simulator.v3keys import CERTIFICATE_LIFETIME, new_certified_key
from tests.conftest import with_overrides
from tests.db import fresh_database_url
from tests.payments.test_v3_flow import on_v3, v3_simulator  # noqa: F401
from tests.plugins.simulator import ServerThread, SimulatorHandle, start_simulator
from tests.plugins.tls import Pki
from tests.test_cli import cli

HTTPS_NOTIFIES = {
    "notify_url": "https://localhost/wechat/pay/notify",
    "refund_notify_url": "https://localhost/wechat/pay/refund-notify",
}
HTTPS_V3_NOTIFIES = {
    "v3_notify_url": "https://localhost/n",
    "v3_refund_notify_url": "https://localhost/r",
}


def lines(report: str) -> dict[str, str]:
    """``check -> line`` for each finding of a report."""
    found = {}
    for line in report.splitlines()[:-1]:
        check = line[6:].split(":", 1)[0]
        found[check] = line
    return found


def test_a_healthy_v2_setup_passes_and_exits_0(
    database_url: str, fresh_simulator: SimulatorHandle, pki: Pki
) -> None:
    done = cli(
        database_url,
        "doctor",
        WXPAY_PAY_API_BASE=fresh_simulator.base_url,
        WXPAY_MINIPROGRAM_API_BASE=fresh_simulator.base_url,
        WXPAY_SIMULATOR_MOUNT="false",
        WXPAY_NOTIFY_URL=HTTPS_NOTIFIES["notify_url"],
        WXPAY_REFUND_NOTIFY_URL=HTTPS_NOTIFIES["refund_notify_url"],
        WXPAY_MCH_CERT_PATH=str(pki.merchant_cert),
        WXPAY_MCH_KEY_PATH=str(pki.merchant_key),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    found = lines(done.stdout)
    assert found["WeChat Pay v2"].startswith("ok    WeChat Pay v2: answers a signed query")
    assert found["database"].startswith("ok    database: answers; schema at head")
    assert "expires" in found["merchant certificate"]
    assert found["WXPAY_NOTIFY_URL"] == "ok    WXPAY_NOTIFY_URL: " + (
        HTTPS_NOTIFIES["notify_url"] + " resolves"
    )
    assert done.stdout.rstrip().endswith("everything holds")


async def test_a_healthy_v3_setup_queries_both_versions(
    settings: Settings,
    v3_material: DevMaterial,
    v3_simulator: SimulatorHandle,  # noqa: F811
    tmp_path: Path,
) -> None:
    v3 = on_v3(v3_material, tmp_path, v3_simulator.base_url)

    text, healthy = await doctor(
        with_overrides(settings, {**v3, **HTTPS_NOTIFIES, **HTTPS_V3_NOTIFIES})
    )

    assert healthy, text
    found = lines(text)
    assert found["WeChat Pay v3"].startswith("ok")
    assert found["WeChat Pay v2"].startswith("ok")  # the v2 key is still set: old orders
    assert found["v3 merchant private key"].startswith("ok")
    assert found["WXPAY_V3_NOTIFY_URL"].startswith("ok")


def certificate_mode(material: DevMaterial, days_left: int, mchid: str) -> DevMaterial:
    """``material`` with WeChat Pay signing with one platform certificate instead of its public
    key (§8.6), the certificate expiring in ``days_left`` days."""
    start = dt.datetime.now(dt.UTC) - CERTIFICATE_LIFETIME + dt.timedelta(days=days_left, hours=1)
    key = new_certified_key(mchid, not_before=start)
    return replace(material, config=replace(material.config, signing_keys=(key,)))


@contextmanager
def running(server: ServerThread) -> Iterator[str]:
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.parametrize(("days_left", "mark"), [(400, "ok"), (10, "warn")])
async def test_platform_certificate_mode_reports_each_certificate_and_when_it_expires(
    settings: Settings, v3_material: DevMaterial, tmp_path: Path, days_left: int, mark: str
) -> None:
    """No WeChat Pay public key configured: WeChat is verified with the platform certificates
    it lists at /v3/certificates (§8.6), which expire like the merchant's (``warn`` within 30
    days)."""
    material = certificate_mode(v3_material, days_left, settings.mch_id)
    handle, server = start_simulator(settings, v3=material.config)
    v3 = on_v3(material, tmp_path, handle.base_url)
    v3 |= {"wechatpay_public_key_path": None, "wechatpay_public_key_id": None}
    try:
        text, healthy = await doctor(
            with_overrides(settings, {**v3, **HTTPS_NOTIFIES, **HTTPS_V3_NOTIFIES})
        )
    finally:
        server.stop()

    assert healthy, text  # a warning is no failure
    found = lines(text)
    assert "WeChat Pay public key" not in found
    assert found["v3 merchant private key"].startswith("ok")
    assert found["WeChat Pay v3"].startswith("ok")  # verified with the downloaded certificate
    (key,) = material.config.signing_keys
    assert key.certificate_pem is not None
    ends = x509.load_pem_x509_certificate(key.certificate_pem).not_valid_after_utc
    assert found["WeChat Pay platform certificates"] == (
        f"{mark:<5} WeChat Pay platform certificates: 1 listed ({key.serial} to {ends:%Y-%m-%d}); "
        f"the last, expires {ends:%Y-%m-%d} ({days_left} days)"
    )


def not_wechat_pay(code: str) -> Starlette:
    """A host that answers every request 404 ``{"code": code}`` without WeChat Pay's signature:
    a wrong address, or a proxy's error page."""

    async def answer(request: Request) -> JSONResponse:
        return JSONResponse({"code": code, "message": "not here"}, status_code=404)

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


@pytest.mark.parametrize("code", ["NOT_FOUND", "ORDER_NOT_EXIST"])
async def test_an_unsigned_404_does_not_prove_that_wechat_pay_v3_answers(
    settings: Settings, v3_material: DevMaterial, tmp_path: Path, code: str
) -> None:
    """§8.1: WeChat answers a query for an order it does not have with 404 ``ORDER_NOT_EXIST``,
    signed like any answer to a correctly signed request (§8.3; WeChat's v3 signing guide,
    签名验证). An unsigned one, whatever its code, anyone could have sent."""
    with running(ServerThread(not_wechat_pay(code))) as url:
        text, healthy = await doctor(with_overrides(settings, on_v3(v3_material, tmp_path, url)))

    assert not healthy
    line = lines(text)["WeChat Pay v3"]
    assert line.startswith("FAIL  WeChat Pay v3: answered, but not as WeChat Pay:"), line
    assert f"HTTP 404 {code} (not signed by WeChat Pay)" in line


@pytest.mark.parametrize(("status", "code"), [(404, "NOT_FOUND"), (400, "ORDER_NOT_EXIST")])
async def test_a_signed_not_found_other_than_404_order_not_exist_fails(
    settings: Settings,
    v3_material: DevMaterial,
    v3_simulator: SimulatorHandle,  # noqa: F811
    tmp_path: Path,
    status: int,
    code: str,
) -> None:
    await v3_simulator.set_fault(
        "business_error", endpoint="v3_query", err_code=code, http_status=status
    )
    v3 = on_v3(v3_material, tmp_path, v3_simulator.base_url)

    text, healthy = await doctor(with_overrides(settings, v3))

    assert not healthy
    line = lines(text)["WeChat Pay v3"]
    assert line.startswith("FAIL  WeChat Pay v3: answered, but not as WeChat Pay:"), line
    assert f"HTTP {status} {code} (signed)" in line


def expired_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "1900000109")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert, key_file = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key_file


@pytest.fixture
def unmigrated_url() -> Iterator[str]:
    with fresh_database_url() as url:
        yield url


async def test_a_broken_setup_names_every_problem(
    settings: Settings, tmp_path: Path, unmigrated_url: str
) -> None:
    cert, key = expired_certificate(tmp_path)
    broken: dict[str, Any] = {
        "database_url": unmigrated_url,
        "api_key": "a" * 32,  # not the key the simulator checks signatures with
        "mch_cert_path": str(cert),
        "mch_key_path": str(key),
        "notify_url": "https://notify.invalid/wechat/pay/notify",
    }
    text, healthy = await doctor(with_overrides(settings, broken))

    assert not healthy
    found = lines(text)
    assert found["database"].startswith("FAIL  database: answers, but has no readable schema")
    assert found["WeChat Pay v2"].startswith("FAIL  WeChat Pay v2: answered, but refused")
    assert found["merchant certificate"].startswith("FAIL  merchant certificate:")
    assert "EXPIRED" in found["merchant certificate"]
    assert found["WXPAY_NOTIFY_URL"].startswith("FAIL  WXPAY_NOTIFY_URL: notify.invalid")
    assert text.endswith("4 check(s) failed")
    assert "a" * 32 not in text


async def test_a_key_that_is_not_the_certificates_fails(settings: Settings, pki: Pki) -> None:
    mismatched = {"mch_cert_path": str(pki.merchant_cert), "mch_key_path": str(pki.server_key)}

    text, healthy = await doctor(with_overrides(settings, mismatched))

    assert not healthy
    assert "is not the key of WXPAY_MCH_CERT_PATH" in lines(text)["merchant certificate"]


async def test_nothing_answering_fails_in_production(settings: Settings) -> None:
    production: dict[str, Any] = {
        "env": "production",
        "database_url": "postgresql+asyncpg://postgres@127.0.0.1:9/nothing",
        "pay_api_base": "https://127.0.0.1:9",
        "miniprogram_api_base": "https://127.0.0.1:9",
        "appid": "wx0000000000000001",
        "mch_id": "1230000001",
        # Production refuses weak secrets (fewer than 8 distinct characters) and repeats.
        "app_secret": "app-secret-0123456789abcdefghijk",
        "api_key": "api-key-0123456789abcdefghijklmn",
        "secret_key": "secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        "admin_token": "admin-token-0123456789abcdefghij",
        "notify_url": "https://localhost/wechat/pay/notify",
        "refund_notify_url": None,
    }

    text, healthy = await doctor(with_overrides(settings, production))

    assert not healthy
    found = lines(text)
    assert found["configuration"].startswith("ok    configuration: production")
    assert found["WeChat Pay v2"].startswith("FAIL  WeChat Pay v2: does not answer")
    assert found["database"].startswith("FAIL  database: does not answer")
    assert found["merchant certificate"].startswith("warn")  # v2 refunds need one


@pytest.mark.parametrize("value", ["not-a-number"])
def test_unreadable_settings_are_reported_not_raised(database_url: str, value: str) -> None:
    done = cli(database_url, "doctor", WXPAY_SESSION_TTL_SECONDS=value)

    assert done.returncode == 1
    assert done.stdout.startswith("FAIL  configuration: cannot be read: session_ttl_seconds")
