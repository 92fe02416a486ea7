"""``python -m app.simulator --api-version v3``: its keys from flags or environment, or a
generated development set kept on disk; and v3 served under a host's ``/sim`` mount."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from app.simulator import Simulator
from app.simulator.__main__ import dev_material_notice, parse_args, v3_config
from app.simulator.v3files import merchant_public_pem, write_dev_material
from app.simulator.v3keys import DevMaterial, V3Config
from tests.hermetic import child_env, hermetic_settings
from tests.simulator.helpers import fast_config
from tests.simulator.v3helpers import v3_client

MCHID = hermetic_settings().mch_id


def test_without_keys_a_development_set_is_generated_once_and_reused(tmp_path: Path) -> None:
    args = parse_args(["--api-version", "v3", "--v3-key-dir", str(tmp_path)], {})

    first = v3_config(args, MCHID)
    again = v3_config(args, MCHID)

    assert args.api_version == "v3"
    assert first == again  # a service configured against it stays valid across restarts
    assert first.signing_keys[0].serial.startswith("PUB_KEY_ID_")
    assert (
        (tmp_path / "public-key" / "merchant_private_key.pem")
        .read_bytes()
        .startswith(b"-----BEGIN PRIVATE KEY-----")
    )


def test_a_kept_certificate_mode_set_is_read_back_whole(
    tmp_path: Path, v3_certificate_material: DevMaterial
) -> None:
    write_dev_material(v3_certificate_material, tmp_path / "certificate")
    args = parse_args(["--v3-mode", "certificate", "--v3-key-dir", str(tmp_path)], {})

    assert v3_config(args, MCHID) == v3_certificate_material.config


def test_given_files_are_read_from_the_environment(
    tmp_path: Path, v3_material: DevMaterial
) -> None:
    write_dev_material(v3_material, tmp_path)
    environ = {
        "WXSIM_API_VERSION": "v3",
        "WXSIM_API_V3_KEY": v3_material.config.api_v3_key,
        # The service's own apiclient_key.pem will do: only its public half is kept.
        "WXSIM_MERCHANT_KEY": str(tmp_path / "merchant_private_key.pem"),
        "WXSIM_MERCHANT_SERIAL_NO": v3_material.config.merchant_serial_no,
        "WXSIM_WECHATPAY_PRIVATE_KEY": str(tmp_path / "wechatpay_private_key.pem"),
        "WXSIM_WECHATPAY_PUBLIC_KEY_ID": v3_material.wechatpay_public_key_id,
    }

    config = v3_config(parse_args(["--v3-key-dir", str(tmp_path / "unused")], environ), MCHID)

    assert config == v3_material.config
    assert not (tmp_path / "unused").exists()


def test_the_notice_names_what_a_service_is_configured_with(
    tmp_path: Path, v3_material: DevMaterial
) -> None:
    notice = dev_material_notice(v3_material, tmp_path)

    assert str(tmp_path / "merchant_private_key.pem") in notice
    assert str(tmp_path / "wechatpay_public_key.pem") in notice
    assert v3_material.wechatpay_public_key_id in notice
    assert v3_material.config.merchant_serial_no in notice


def test_the_command_refuses_an_incomplete_key_set(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.simulator", "--api-version", "v3", "--port", "0",
         "--api-v3-key", "0123456789abcdefghijklmnopqrstuv", "--v3-key-dir", str(tmp_path)],
        env=child_env(), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert result.returncode == 2
    assert "give all of them" in result.stderr


@asynccontextmanager
async def mounted(simulator: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    host = FastAPI()
    host.mount("/sim", simulator.app)
    async with simulator:
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as http:
            yield http


async def test_mounted_under_sim_requests_are_verified_against_the_path_the_client_signed(
    v3_material: DevMaterial,
) -> None:
    simulator = Simulator(fast_config(v3=v3_material.config))
    async with mounted(simulator) as http:
        client = v3_client(
            http, v3_material, api_base="http://svc.test/sim", appid=simulator.config.appid
        )
        openid = (await http.post("/sim/_control/login-code", json={})).json()["openid"]
        prepay_id = await client.jsapi_prepay(
            description="会员", out_trade_no="V3MOUNTED01", total=1, openid=openid,
            notify_url="http://127.0.0.1:9/notify",
        )  # fmt: skip
        queried = await client.query("V3MOUNTED01")

    assert prepay_id.startswith("wx")
    assert queried.trade_state == "NOTPAY"


def test_a_service_s_plain_values_make_the_same_configuration(v3_material: DevMaterial) -> None:
    config = v3_material.config

    built = V3Config.public_key_mode(
        api_v3_key=config.api_v3_key,
        merchant_serial_no=config.merchant_serial_no,
        merchant_public_key_pem=merchant_public_pem(v3_material.merchant_private_key_pem),
        wechatpay_private_key_pem=config.signing_keys[0].private_key_pem,
        wechatpay_public_key_id=v3_material.wechatpay_public_key_id,
    )

    assert built == config
