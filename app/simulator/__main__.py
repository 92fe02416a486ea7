"""``python -m app.simulator --port 9100``: a standalone local WeChat.

``--api-version v3`` serves WeChat Pay v3 beside v2 (one merchant, one set of orders). Its keys
come from these flags, each with an environment variable of the same meaning:

- ``--v3-mode public-key|certificate`` (``WXSIM_V3_MODE``): how WeChat Pay signs (§8.6).
- ``--api-v3-key`` (``WXSIM_API_V3_KEY``): the 32-byte APIv3 key of the merchant.
- ``--merchant-key PATH`` (``WXSIM_MERCHANT_KEY``): the merchant's public key, or its private
  key (``apiclient_key.pem``), which verifies ``Authorization``; ``--merchant-serial-no``
  (``WXSIM_MERCHANT_SERIAL_NO``) is the serial it must name.
- public-key mode: ``--wechatpay-private-key PATH`` (``WXSIM_WECHATPAY_PRIVATE_KEY``), the key
  WeChat Pay signs with, and ``--wechatpay-public-key-id`` (``WXSIM_WECHATPAY_PUBLIC_KEY_ID``),
  its ``PUB_KEY_ID_...``.
- certificate mode: ``--platform-certificate CERT.pem,KEY.pem`` (``WXSIM_PLATFORM_CERTIFICATES``,
  pairs separated by ``;``), once per certificate, in rotation order.

Give all of them or none: with none, a development set is generated under ``--v3-key-dir``
(``WXSIM_V3_KEY_DIR``, default ``var/sim-v3``) and reused on the next start; the paths a service
needs (the merchant's private key, WeChat Pay's public key and id, the APIv3 key) are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import uvicorn

from app.config import get_settings
from app.simulator.config import SimulatorConfig, SimulatorRefused
from app.simulator.core import create_simulator_app
from app.simulator.v3files import (
    API_V3_KEY,
    MERCHANT_PRIVATE_KEY,
    WECHATPAY_PUBLIC_KEY,
    V3Paths,
    dev_material,
    load_v3_config,
)
from app.simulator.v3keys import DevMaterial, V3Config

DEFAULT_KEY_DIR = Path("var/sim-v3")


def parse_args(argv: list[str], environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m app.simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--time-factor", type=float, default=1.0, help="scales notify retries")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="on WeChat endpoints")
    parser.add_argument("--notify-timeout", type=float, default=5.0, help="seconds per reply")
    _add_v3_arguments(parser, env)
    return parser.parse_args(argv)


def _add_v3_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    v3 = parser.add_argument_group("WeChat Pay v3")
    v3.add_argument(
        "--api-version", choices=("v2", "v3"), default=env.get("WXSIM_API_VERSION", "v2"),
        help="v3 serves the v3 paths beside the v2 ones",
    )  # fmt: skip
    v3.add_argument(
        "--v3-mode", choices=("public-key", "certificate"),
        default=env.get("WXSIM_V3_MODE", "public-key"),
    )  # fmt: skip
    v3.add_argument(
        "--v3-key-dir", type=Path, default=Path(env.get("WXSIM_V3_KEY_DIR", DEFAULT_KEY_DIR))
    )
    v3.add_argument("--api-v3-key", default=env.get("WXSIM_API_V3_KEY"))
    v3.add_argument("--merchant-key", type=Path, default=_path(env.get("WXSIM_MERCHANT_KEY")))
    v3.add_argument("--merchant-serial-no", default=env.get("WXSIM_MERCHANT_SERIAL_NO"))
    v3.add_argument(
        "--wechatpay-private-key", type=Path, default=_path(env.get("WXSIM_WECHATPAY_PRIVATE_KEY"))
    )
    v3.add_argument("--wechatpay-public-key-id", default=env.get("WXSIM_WECHATPAY_PUBLIC_KEY_ID"))
    pairs = [p for p in env.get("WXSIM_PLATFORM_CERTIFICATES", "").split(";") if p]
    v3.add_argument(
        "--platform-certificate", action="append", default=pairs, metavar="CERT.pem,KEY.pem"
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def v3_paths(args: argparse.Namespace) -> V3Paths:
    certificates = tuple(_pair(value) for value in args.platform_certificate)
    return V3Paths(
        key_dir=args.v3_key_dir,
        certificate_mode=args.v3_mode == "certificate",
        api_v3_key=args.api_v3_key,
        merchant_key=args.merchant_key,
        merchant_serial_no=args.merchant_serial_no,
        wechatpay_private_key=args.wechatpay_private_key,
        wechatpay_public_key_id=args.wechatpay_public_key_id,
        platform_certificates=certificates,
    )


def _pair(value: str) -> tuple[Path, Path]:
    certificate, _, key = value.partition(",")
    if not key:
        raise ValueError(f"--platform-certificate wants CERT.pem,KEY.pem, not {value!r}")
    return Path(certificate), Path(key)


def v3_config(args: argparse.Namespace, mchid: str) -> V3Config:
    """The v3 keys from the flags, or the generated development set (its paths printed)."""
    paths = v3_paths(args)
    given = any(
        (paths.api_v3_key, paths.merchant_key, paths.merchant_serial_no,
         paths.wechatpay_private_key, paths.wechatpay_public_key_id, paths.platform_certificates)
    )  # fmt: skip
    if given:
        return load_v3_config(paths)
    material, directory = dev_material(
        paths.key_dir, mchid, certificate_mode=paths.certificate_mode
    )
    print(dev_material_notice(material, directory), flush=True)
    return material.config


def dev_material_notice(material: DevMaterial, directory: Path) -> str:
    """Where the service's side of the generated keys is, and how WeChat Pay signs."""
    config = material.config
    if config.certificate_mode:
        verify = "the platform certificates at GET /v3/certificates (or platform_certificate_*.pem)"
    else:
        verify = f"{directory / WECHATPAY_PUBLIC_KEY} (id {material.wechatpay_public_key_id})"
    return "\n".join(
        [
            f"v3 development keys in {directory}/",
            f"  merchant private key  {directory / MERCHANT_PRIVATE_KEY}",
            f"  merchant serial no    {config.merchant_serial_no}",
            f"  APIv3 key             {directory / API_V3_KEY}",
            f"  WeChat Pay verifies   {verify}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = get_settings()
        v3 = v3_config(args, settings.mch_id) if args.api_version == "v3" else None
        config = SimulatorConfig.from_settings(
            settings,
            time_factor=args.time_factor,
            latency_ms=args.latency_ms,
            notify_timeout=args.notify_timeout,
            v3=v3,
        )
    except (SimulatorRefused, ValueError, OSError) as refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    uvicorn.run(create_simulator_app(config), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
