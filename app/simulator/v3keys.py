"""The WeChat Pay v3 key material of one simulated merchant (PROTOCOL.md §8, §8.6).

WeChat Pay signs answers and notifies with either its *public key* (public-key mode, id
``PUB_KEY_ID_`` + 32 digits) or a *platform certificate* (certificate mode, named by the
certificate's serial number in uppercase hex). It verifies the merchant's ``Authorization`` with
the public half of the merchant's API key, named by the merchant certificate serial.

Everything here is plain values (PEM bytes and strings), so a service's settings can be passed in
as they are; ``generate_dev_material`` makes a throw-away set for tests and local runs.
"""

from __future__ import annotations

import functools
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from app.wechat.v3 import load_private_key, load_public_key

PUBLIC_KEY_ID_PREFIX = "PUB_KEY_ID_"
# Platform certificates last five years (§8.6).
CERTIFICATE_LIFETIME = timedelta(days=5 * 365)


@dataclass(frozen=True, slots=True)
class WeChatPayKey:
    """A key WeChat Pay signs with: its name on the wire (``Wechatpay-Serial``) and its private
    half; ``certificate_pem`` is set in certificate mode and is what ``/v3/certificates`` serves."""

    serial: str
    private_key_pem: bytes
    certificate_pem: bytes | None = None

    @property
    def public_key_pem(self) -> bytes:
        return _public_half(self.private_key_pem)


@dataclass(frozen=True, slots=True)
class V3Config:
    """The v3 side of the simulated merchant.

    ``signing_keys``: in public-key mode exactly one key without a certificate; in certificate
    mode one or more certified keys, the first signing until a rotation moves on to the next.
    ``merchant_public_key_pem`` verifies our ``Authorization`` when it names
    ``merchant_serial_no``.
    """

    api_v3_key: str
    merchant_serial_no: str
    merchant_public_key_pem: bytes
    signing_keys: tuple[WeChatPayKey, ...]

    def __post_init__(self) -> None:
        if len(self.api_v3_key.encode()) != 32:
            raise ValueError("the APIv3 key is 32 bytes")
        if not self.signing_keys:
            raise ValueError("WeChat Pay needs a key to sign with")
        certified = {key.certificate_pem is not None for key in self.signing_keys}
        if certified == {False} and len(self.signing_keys) != 1:
            raise ValueError("public-key mode has exactly one WeChat Pay public key")
        if len(certified) != 1:
            raise ValueError("either every signing key has a certificate or none has")
        load_public_key(self.merchant_public_key_pem)  # fail fast on a wrong file

    @property
    def certificate_mode(self) -> bool:
        return self.signing_keys[0].certificate_pem is not None

    @classmethod
    def public_key_mode(
        cls,
        *,
        api_v3_key: str,
        merchant_serial_no: str,
        merchant_public_key_pem: bytes,
        wechatpay_private_key_pem: bytes,
        wechatpay_public_key_id: str,
    ) -> V3Config:
        key = WeChatPayKey(wechatpay_public_key_id, wechatpay_private_key_pem)
        return cls(api_v3_key, merchant_serial_no, merchant_public_key_pem, (key,))


@dataclass(frozen=True, slots=True)
class DevMaterial:
    """A generated merchant and WeChat Pay, both halves: ``config`` for the simulator, the rest
    for the service (its merchant private key, WeChat Pay's public key and id)."""

    config: V3Config
    merchant_private_key_pem: bytes

    @property
    def wechatpay_public_key_pem(self) -> bytes:
        return self.config.signing_keys[0].public_key_pem

    @property
    def wechatpay_public_key_id(self) -> str:
        return self.config.signing_keys[0].serial


@functools.lru_cache(maxsize=64)
def _public_half(private_key_pem: bytes) -> bytes:
    # Loading an RSA private key checks it, ~35 ms: once per key is enough.
    return public_pem(load_private_key(private_key_pem))


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,  # what apiclient_key.pem is (§8)
        serialization.NoEncryption(),
    )


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_api_v3_key() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def new_public_key_id() -> str:
    return PUBLIC_KEY_ID_PREFIX + "".join(secrets.choice(string.digits) for _ in range(32))


def new_certified_key(mchid: str, *, not_before: datetime | None = None) -> WeChatPayKey:
    """A self-signed platform certificate; its serial on the wire is the X.509 serial number
    in uppercase hex, which is how SDKs match ``Wechatpay-Serial`` to a certificate."""
    key = new_rsa_key()
    start = not_before or datetime.now(UTC) - timedelta(days=1)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tenpay.com"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Tenpay.com Root CA (simulated, {mchid})"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CERTIFICATE_LIFETIME)
        .sign(key, hashes.SHA256())
    )
    serial = format(certificate.serial_number, "X")
    return WeChatPayKey(
        serial, private_pem(key), certificate.public_bytes(serialization.Encoding.PEM)
    )


def generate_dev_material(mchid: str, *, certificates: int = 0) -> DevMaterial:
    """Fresh RSA-2048 keys (about 50-100 ms each): public-key mode, or certificate mode with
    ``certificates`` platform certificates (two let a test rotate)."""
    merchant = new_rsa_key()
    if certificates:
        keys = tuple(new_certified_key(mchid) for _ in range(certificates))
    else:
        keys = (WeChatPayKey(new_public_key_id(), private_pem(new_rsa_key())),)
    config = V3Config(
        api_v3_key=new_api_v3_key(),
        merchant_serial_no=secrets.token_hex(20).upper(),
        merchant_public_key_pem=public_pem(merchant),
        signing_keys=keys,
    )
    return DevMaterial(config, private_pem(merchant))


def read_pem(path: Path | str) -> bytes:
    return Path(path).read_bytes()
