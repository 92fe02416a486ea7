"""v3 key material on disk, for the standalone simulator (``python -m app.simulator``).

Given paths, the simulator reads them; without, it keeps a generated set in a directory (one
sub-directory per mode) and reuses it on the next start, so a service configured against it
stays valid across restarts. The merchant's key may be given as its private key (the
``apiclient_key.pem`` a service signs with): the simulator only keeps the public half.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.simulator.v3keys import (
    DevMaterial,
    V3Config,
    WeChatPayKey,
    generate_dev_material,
    public_pem,
)

# The names a service's configuration points at (the merchant's side first).
MERCHANT_PRIVATE_KEY = "merchant_private_key.pem"
MERCHANT_PUBLIC_KEY = "merchant_public_key.pem"
MERCHANT_SERIAL_NO = "merchant_serial_no.txt"
API_V3_KEY = "api_v3_key.txt"
WECHATPAY_PUBLIC_KEY = "wechatpay_public_key.pem"
WECHATPAY_PUBLIC_KEY_ID = "wechatpay_public_key_id.txt"
WECHATPAY_PRIVATE_KEY = "wechatpay_private_key.pem"
PLATFORM_CERTIFICATE = "platform_certificate_{n}.pem"
PLATFORM_PRIVATE_KEY = "platform_private_key_{n}.pem"
DEV_CERTIFICATES = 2  # enough to rotate once


@dataclass(frozen=True, slots=True)
class V3Paths:
    """What a run was given; unset fields are generated under ``key_dir``."""

    key_dir: Path
    certificate_mode: bool = False
    api_v3_key: str | None = None
    merchant_key: Path | None = None  # public or private PEM
    merchant_serial_no: str | None = None
    wechatpay_private_key: Path | None = None
    wechatpay_public_key_id: str | None = None
    platform_certificates: tuple[tuple[Path, Path], ...] = ()  # (certificate, private key)

    @property
    def complete(self) -> bool:
        merchant = self.api_v3_key and self.merchant_key and self.merchant_serial_no
        wechatpay = self.platform_certificates if self.certificate_mode else (
            self.wechatpay_private_key and self.wechatpay_public_key_id
        )  # fmt: skip
        return bool(merchant and wechatpay)


def load_v3_config(paths: V3Paths) -> V3Config:
    """The configuration from given files; every one must be given."""
    if not paths.complete:
        raise ValueError("v3 keys: give all of them, or none to use generated development keys")
    assert paths.api_v3_key and paths.merchant_key and paths.merchant_serial_no
    if paths.certificate_mode:
        keys = tuple(_certified(cert, key) for cert, key in paths.platform_certificates)
    else:
        assert paths.wechatpay_private_key and paths.wechatpay_public_key_id
        pem = paths.wechatpay_private_key.read_bytes()
        keys = (WeChatPayKey(paths.wechatpay_public_key_id, pem),)
    return V3Config(
        api_v3_key=paths.api_v3_key,
        merchant_serial_no=paths.merchant_serial_no,
        merchant_public_key_pem=merchant_public_pem(paths.merchant_key.read_bytes()),
        signing_keys=keys,
    )


def merchant_public_pem(pem: bytes) -> bytes:
    """The public half, whether ``pem`` is the merchant's public or private key."""
    if b"PRIVATE KEY" not in pem:
        return pem
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the merchant key must be RSA")
    return public_pem(key)


def _certified(certificate_path: Path, key_path: Path) -> WeChatPayKey:
    pem = certificate_path.read_bytes()
    serial = format(x509.load_pem_x509_certificate(pem).serial_number, "X")
    return WeChatPayKey(serial, key_path.read_bytes(), pem)


def dev_material(key_dir: Path, mchid: str, *, certificate_mode: bool) -> tuple[DevMaterial, Path]:
    """The generated set kept under ``key_dir`` (created on first use), and its directory."""
    directory = key_dir / ("certificate" if certificate_mode else "public-key")
    if (directory / API_V3_KEY).exists():
        return _read_dev_material(directory, certificate_mode), directory
    material = generate_dev_material(mchid, certificates=DEV_CERTIFICATES * certificate_mode)
    write_dev_material(material, directory)
    return material, directory


def write_dev_material(material: DevMaterial, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    config = material.config
    files: dict[str, bytes] = {
        MERCHANT_PRIVATE_KEY: material.merchant_private_key_pem,
        MERCHANT_PUBLIC_KEY: config.merchant_public_key_pem,
        MERCHANT_SERIAL_NO: config.merchant_serial_no.encode(),
        API_V3_KEY: config.api_v3_key.encode(),
    }
    for n, key in enumerate(config.signing_keys, start=1):
        if key.certificate_pem is None:
            files[WECHATPAY_PRIVATE_KEY] = key.private_key_pem
            files[WECHATPAY_PUBLIC_KEY] = key.public_key_pem
            files[WECHATPAY_PUBLIC_KEY_ID] = key.serial.encode()
        else:
            files[PLATFORM_CERTIFICATE.format(n=n)] = key.certificate_pem
            files[PLATFORM_PRIVATE_KEY.format(n=n)] = key.private_key_pem
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content)
        path.chmod(0o600)


def _read_dev_material(directory: Path, certificate_mode: bool) -> DevMaterial:
    merchant_private = (directory / MERCHANT_PRIVATE_KEY).read_bytes()
    certificates = tuple(
        (directory / PLATFORM_CERTIFICATE.format(n=n), directory / PLATFORM_PRIVATE_KEY.format(n=n))
        for n in range(1, DEV_CERTIFICATES + 1)
    )
    paths = V3Paths(
        key_dir=directory,
        certificate_mode=certificate_mode,
        api_v3_key=(directory / API_V3_KEY).read_text().strip(),
        merchant_key=directory / MERCHANT_PUBLIC_KEY,
        merchant_serial_no=(directory / MERCHANT_SERIAL_NO).read_text().strip(),
        wechatpay_private_key=directory / WECHATPAY_PRIVATE_KEY,
        wechatpay_public_key_id=_read_optional(directory / WECHATPAY_PUBLIC_KEY_ID),
        platform_certificates=certificates if certificate_mode else (),
    )
    return DevMaterial(load_v3_config(paths), merchant_private)


def _read_optional(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None
