"""pytest plugin: the simulator behind HTTPS that asks for the merchant certificate, as WeChat.

``pki`` (session scope) makes a throw-away CA with ``cryptography``, a server certificate for
127.0.0.1 and a merchant client certificate and key (``apiclient_cert.pem``,
``apiclient_key.pem``), all signed by that CA.

``tls_simulator`` serves a fresh simulator over HTTPS. Every client is asked for a certificate
in the handshake, and one the CA did not sign is refused there. Only ``/secapi/`` (the refund,
PROTOCOL.md §6.3) insists on one: order and refund queries on the same host need none (§6.4),
so the handshake cannot demand it of everyone, and the check is made per request, from the
certificate the connection showed. Every ``/secapi/`` request is recorded with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import DEV_MCH_ID, Settings
from app.simulator import create_simulator_app
from tests.plugins.simulator import ServerThread, SimulatorHandle, simulator_config

# --- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    merchant_cert: Path
    merchant_key: Path
    merchant_name: str  # the merchant certificate's subject, RFC 4514

    def trusting_context(self) -> ssl.SSLContext:
        """A client context that trusts the test CA (and shows no certificate)."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def make_pki(directory: Path, mch_id: str) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("wxpay test CA")
    ca = _issue(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    server = _issue(
        _name("127.0.0.1"), server_key.public_key(), ca_name, ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH, alt_names=[loopback],
    )  # fmt: skip
    merchant_key = ec.generate_private_key(ec.SECP256R1())
    merchant_name = _name(mch_id)  # WeChat's apiclient certificates name the merchant id
    merchant = _issue(
        merchant_name, merchant_key.public_key(), ca_name, ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )  # fmt: skip
    files = {
        "ca.pem": _pem(ca),
        "server_cert.pem": _pem(server),
        "server_key.pem": _key_pem(server_key),
        "apiclient_cert.pem": _pem(merchant),
        "apiclient_key.pem": _key_pem(merchant_key),
    }
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return Pki(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server_cert.pem",
        server_key=directory / "server_key.pem",
        merchant_cert=directory / "apiclient_cert.pem",
        merchant_key=directory / "apiclient_key.pem",
        merchant_name=merchant_name.rfc4514_string(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    alt_names: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(_CA_KEY_USAGE, critical=True)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- the listener -----------------------------------------------------------------------------


class ClientCertProtocol(H11Protocol):
    """uvicorn's h11 protocol plus the client certificate in ``scope["extensions"]["tls"]``
    (the ASGI TLS extension, which uvicorn does not fill in)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = _with_client_cert(self.app, transport.get_extra_info("ssl_object"))


def _with_client_cert(app: ASGIApp, ssl_object: ssl.SSLObject | None) -> ASGIApp:
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    tls = {
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": (
            x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None
        ),
        "client_cert_error": None,
    }

    async def with_tls(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = {**scope.get("extensions", {}), "tls": tls}
        await app({**scope, "extensions": extensions}, receive, send)

    return with_tls


class RefundCertificateGuard:
    """WeChat's rule in front of the simulator: ``/secapi/`` serves only a client that showed a
    certificate. Refused the way a TLS front with optional client verification does it (nginx:
    400 "No required SSL certificate was sent")."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (path, the client certificate's subject or None), for every /secapi/ request.
        self.seen: list[tuple[str, str | None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/secapi/"):
            name = scope.get("extensions", {}).get("tls", {}).get("client_cert_name")
            self.seen.append((scope["path"], name))
            if name is None:
                refusal = PlainTextResponse("No required SSL certificate was sent", 400)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class TlsSimulator:
    handle: SimulatorHandle
    guard: RefundCertificateGuard


def start_tls_simulator(settings: Settings, pki: Pki) -> tuple[TlsSimulator, ServerThread]:
    config = simulator_config(settings)
    guard = RefundCertificateGuard(create_simulator_app(config))
    server = ServerThread(guard, **_https_options(pki))
    handle = SimulatorHandle(server.start(), settings, config, verify=pki.trusting_context())
    return TlsSimulator(handle, guard), server


def _https_options(pki: Pki) -> dict[str, Any]:
    return {
        "http": ClientCertProtocol,
        "ssl_certfile": str(pki.server_cert),
        "ssl_keyfile": str(pki.server_key),
        "ssl_ca_certs": str(pki.ca_cert),
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
    }


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), DEV_MCH_ID)


@pytest.fixture
def tls_simulator(settings: Settings, pki: Pki) -> Iterator[TlsSimulator]:
    """A fresh simulator for the test settings' merchant, over HTTPS (see the module doc)."""
    simulator, server = start_tls_simulator(settings, pki)
    try:
        yield simulator
    finally:
        server.stop()
