"""The platform-certificate download (``GET /v3/certificates``, PROTOCOL.md §8.6) against a
stand-in WeChat on httpx.MockTransport, with certificates crafted for the case at hand.

§8.6: the answer is ``data[]`` of ``{serial_no, effective_time, expire_time,
encrypt_certificate{algorithm: "AEAD_AES_256_GCM", nonce, associated_data: "certificate",
ciphertext}}``, each PEM decrypted with the APIv3 key; certificates rotate with an overlap, so
WeChat lists the old certificate next to the new one. Every certificate here holds the §10 H
test key: the answer's signature then shows only which serial it names (§8.3).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from app.wechat.errors import WeChatUnavailable
from app.wechat.retry import RetryPolicy
from app.wechat.v3 import load_private_key, rsa_sign
from app.wechat.v3client import WeChatPayV3Client
from app.wechat.v3trust import WeChatPayTrust
from tests.wechat.test_v3client import client_at
from tests.wechat.vectors_v3 import L5_API_V3_KEY, TEST_PRIVATE_KEY

APPID = "wx1234567890abcdef"
MCHID = "1900000109"
NOW = 1700028931
PRIVATE = load_private_key(TEST_PRIVATE_KEY)
FIVE_YEARS = timedelta(days=5 * 365)


def _certificate(serial: int, not_before: datetime, not_after: datetime) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA (test)")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(PRIVATE.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(PRIVATE, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(NOW + seconds, UTC)


# A rotation's overlap (§8.6): the old certificate lapsed a second ago, the new one holds.
OLD = 0x1A2B3C4D5E6F
NEW = 0x6F5E4D3C2B1A
OLD_PEM = _certificate(OLD, _at(0) - FIVE_YEARS, _at(-1))
NEW_PEM = _certificate(NEW, _at(-86400), _at(-86400) + FIVE_YEARS)
NEXT_PEM = _certificate(0x77, _at(86400), _at(86400) + FIVE_YEARS)  # not valid yet


def listed(pem: bytes, serial: int) -> dict[str, Any]:
    """One ``data[]`` entry as §8.6 shows it, sealed with our APIv3 key."""
    nonce = secrets.token_hex(6)
    ciphertext = AESGCM(L5_API_V3_KEY.encode()).encrypt(nonce.encode(), pem, b"certificate")
    certificate = x509.load_pem_x509_certificate(pem)
    return {
        "serial_no": format(serial, "X"),
        "effective_time": certificate.not_valid_before_utc.isoformat(),
        "expire_time": certificate.not_valid_after_utc.isoformat(),
        "encrypt_certificate": {
            "algorithm": "AEAD_AES_256_GCM", "nonce": nonce, "associated_data": "certificate",
            "ciphertext": base64.b64encode(ciphertext).decode(),
        },
    }  # fmt: skip


def signed(body: bytes, serial: int) -> httpx.Response:
    """A 200 answer signed as WeChat signs it (§8.3), naming the certificate ``serial``."""
    nonce = secrets.token_hex(16)
    headers = {
        "Wechatpay-Timestamp": str(NOW),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Serial": format(serial, "X"),
        "Wechatpay-Signature": rsa_sign(f"{NOW}\n{nonce}\n{body.decode()}\n", PRIVATE),
    }
    return httpx.Response(200, content=body, headers=headers)


def certificates_answer(data: Any) -> bytes:
    return json.dumps({"data": data}).encode()


ClientFactory = Callable[..., WeChatPayV3Client]


@pytest.fixture
async def wechat() -> AsyncIterator[ClientFactory]:
    """A client in certificate mode (no public key) whose ``GET /v3/certificates`` is answered
    with ``body`` signed by ``signed_by``; any other call gets a transaction signed by NEW."""
    clients: list[httpx.AsyncClient] = []

    def make(body: bytes, *, signed_by: int = NEW) -> WeChatPayV3Client:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v3/certificates":
                return signed(body, signed_by)
            transaction = {"appid": APPID, "mchid": MCHID, "out_trade_no": "T1",
                           "trade_state": "NOTPAY"}  # fmt: skip
            return signed(json.dumps(transaction).encode(), NEW)

        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        clients.append(http)
        return client_at(http, WeChatPayTrust(clock=lambda: NOW), RetryPolicy(max_attempts=1))

    yield make
    for http in clients:
        await http.aclose()


@pytest.mark.parametrize(
    ("pem", "serial"), [(OLD_PEM, OLD), (NEXT_PEM, 0x77)], ids=["lapsed", "not-yet-valid"]
)
async def test_a_certificate_not_valid_now_is_skipped_and_the_valid_one_still_trusted(
    wechat: ClientFactory, caplog: pytest.LogCaptureFixture, pem: bytes, serial: int
) -> None:
    # §8.6: during a rotation both certificates are listed; one outside its validity must not
    # cost us the one that holds, or no answer or notify of WeChat's would verify.
    client = wechat(certificates_answer([listed(pem, serial), listed(NEW_PEM, NEW)]))

    with caplog.at_level(logging.WARNING, logger="app.wechat.v3client"):
        queried = await client.query("T1")  # signed by NEW: a new serial, so a download

    assert queried.trade_state == "NOTPAY"
    assert client.trust.serials() == [format(NEW, "X")]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    expiry = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    assert format(serial, "X") in warning.getMessage()
    assert expiry.isoformat() in warning.getMessage()
    assert "CERTIFICATE" not in warning.getMessage() and L5_API_V3_KEY not in caplog.text


async def test_a_download_that_lists_no_certificate_valid_now_fails(
    wechat: ClientFactory,
) -> None:
    client = wechat(certificates_answer([listed(OLD_PEM, OLD), listed(NEXT_PEM, 0x77)]))

    with pytest.raises(WeChatUnavailable, match="none is valid now"):
        await client.download_certificates()


async def test_a_lapsed_certificate_cannot_vouch_for_the_download(wechat: ClientFactory) -> None:
    # Skipped means not trusted at all: the answer's signature (§8.3) must come from a
    # certificate that is valid now, even though the lapsed one's key would verify it.
    body = certificates_answer([listed(OLD_PEM, OLD), listed(NEW_PEM, NEW)])
    client = wechat(body, signed_by=OLD)

    with pytest.raises(WeChatUnavailable, match="untrusted"):
        await client.download_certificates()


def _good() -> dict[str, Any]:
    return listed(NEW_PEM, NEW)


def _with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    entry = _good()
    change(entry)
    return entry


# Each a ``data`` value of the wrong shape for §8.6; the ones that decrypt are sealed correctly.
MALFORMED: dict[str, Any] = {
    "data-a-string": "certificates",
    "data-an-object": {"serial_no": "6F5E4D3C2B1A"},
    "entry-a-string": ["a string entry"],
    "entry-a-list": [[_good()]],
    "entry-null-after-a-good-one": [_good(), None],
    "entry-empty": [{}],
    "no-encrypt_certificate": [_with(lambda e: e.pop("encrypt_certificate"))],
    "no-serial_no": [_with(lambda e: e.pop("serial_no"))],
    "serial_no-a-number": [_with(lambda e: e.update(serial_no=0x6F5E4D3C2B1A))],
    "encrypt_certificate-a-string": [_with(lambda e: e.update(encrypt_certificate="sealed"))],
    "encrypt_certificate-a-list": [
        _with(lambda e: e.update(encrypt_certificate=[e["encrypt_certificate"]]))
    ],
    "no-ciphertext": [_with(lambda e: e["encrypt_certificate"].pop("ciphertext"))],
    "no-nonce": [_with(lambda e: e["encrypt_certificate"].pop("nonce"))],
    "nonce-a-number": [_with(lambda e: e["encrypt_certificate"].update(nonce=123456789012))],
    "ciphertext-null": [_with(lambda e: e["encrypt_certificate"].update(ciphertext=None))],
    "associated_data-a-list": [
        _with(lambda e: e["encrypt_certificate"].update(associated_data=["certificate"]))
    ],
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_certificate_list_is_an_answer_with_unexpected_fields(
    wechat: ClientFactory, data: Any
) -> None:
    # Any entry of the wrong shape fails the whole download, as any v3 answer with unexpected
    # fields does: the outcome is unknown (WeChatUnavailable), never a crash.
    client = wechat(certificates_answer(data))

    with pytest.raises(WeChatUnavailable, match="answered unexpected fields"):
        await client.download_certificates()


async def test_an_answer_without_data_is_an_answer_with_unexpected_fields(
    wechat: ClientFactory,
) -> None:
    client = wechat(json.dumps({"certificates": [_good()]}).encode())

    with pytest.raises(WeChatUnavailable, match="answered unexpected fields"):
        await client.download_certificates()
