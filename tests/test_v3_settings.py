"""WeChat Pay v3 settings: what production requires, and keys checked at start-up."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from app.adapters.v3setup import V3ConfigError
from app.config import ConfigError
from app.runtime import build_runtime, with_dev_v3_keys
from app.simulator.v3files import MERCHANT_PRIVATE_KEY, WECHATPAY_PUBLIC_KEY, write_dev_material
from app.simulator.v3keys import DevMaterial, generate_dev_material
from tests.hermetic import hermetic_settings
from tests.test_foundation import PRODUCTION

V3_NAMES = (
    "WXPAY_API_V3_KEY",
    "WXPAY_MCH_PRIVATE_KEY_PATH",
    "WXPAY_MCH_CERT_SERIAL_NO",
    "WXPAY_WECHATPAY_PUBLIC_KEY_PATH",
    "WXPAY_WECHATPAY_PUBLIC_KEY_ID",
)


@pytest.fixture(scope="module")
def material() -> DevMaterial:
    return generate_dev_material(PRODUCTION["mch_id"])


def v3_values(material: DevMaterial, directory: Path) -> dict[str, str]:
    write_dev_material(material, directory)
    return {
        "api_version": "v3",
        "api_v3_key": material.config.api_v3_key,
        "mch_private_key_path": str(directory / MERCHANT_PRIVATE_KEY),
        "mch_cert_serial_no": material.config.merchant_serial_no,
        "wechatpay_public_key_path": str(directory / WECHATPAY_PUBLIC_KEY),
        "wechatpay_public_key_id": material.wechatpay_public_key_id,
        "v3_notify_url": "https://pay.example.com/wechat/pay/v3/notify",
    }


def test_production_on_v3_names_every_missing_v3_setting() -> None:
    settings = hermetic_settings(**{**PRODUCTION, "api_version": "v3"})

    with pytest.raises(ConfigError) as refused:
        settings.check_production()

    # Without WeChat Pay's public key, its platform certificates are used (§8.6): only the
    # merchant's own three settings are required.
    assert all(name in str(refused.value) for name in V3_NAMES[:3])
    assert not any(name in str(refused.value) for name in V3_NAMES[3:])


@pytest.mark.parametrize(
    ("dropped", "named"),
    [
        ("wechatpay_public_key_path", "WXPAY_WECHATPAY_PUBLIC_KEY_PATH"),
        ("wechatpay_public_key_id", "WXPAY_WECHATPAY_PUBLIC_KEY_ID"),
    ],
)
def test_the_public_key_and_its_id_go_together(
    material: DevMaterial, tmp_path: Path, dropped: str, named: str
) -> None:
    values = v3_values(material, tmp_path)
    del values[dropped]

    assert hermetic_settings(**values).v3_missing == [named]


def test_without_a_public_key_v3_runs_on_platform_certificates(
    material: DevMaterial, tmp_path: Path
) -> None:
    values = v3_values(material, tmp_path)
    del values["wechatpay_public_key_path"], values["wechatpay_public_key_id"]

    settings = hermetic_settings(**values)

    assert settings.v3_missing == [] and settings.v3_certificate_mode


def test_production_on_v3_needs_no_v2_key(material: DevMaterial, tmp_path: Path) -> None:
    # Merchants who sign up today are given v3 credentials only.
    values = {**PRODUCTION, **v3_values(material, tmp_path), "api_key": "devapikey"}
    values["self_base_url"] = "https://pay.example.com"  # the v3 refund notify address's base
    values.pop("notify_url")

    hermetic_settings(**values).check_production()  # raises if anything is still unsafe


def test_production_on_v3_refuses_a_plain_http_v3_notify_url(
    material: DevMaterial, tmp_path: Path
) -> None:
    values = {**PRODUCTION, **v3_values(material, tmp_path)}
    values["v3_notify_url"] = "http://pay.example.com/wechat/pay/v3/notify"

    with pytest.raises(ConfigError, match="WXPAY_V3_NOTIFY_URL"):
        hermetic_settings(**values).check_production()


@pytest.mark.parametrize(
    ("setting", "content", "named"),
    [
        ("mch_private_key_path", b"not a key", "WXPAY_MCH_PRIVATE_KEY_PATH"),
        ("wechatpay_public_key_path", b"-----BEGIN PUBLIC KEY-----\nAA==\n",
         "WXPAY_WECHATPAY_PUBLIC_KEY_PATH"),
    ],
)  # fmt: skip
async def test_a_key_that_does_not_load_stops_the_start_naming_its_setting(
    material: DevMaterial, tmp_path: Path, setting: str, content: bytes, named: str
) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_bytes(content)
    settings = hermetic_settings(
        **{**v3_values(material, tmp_path), setting: str(broken)},
        database_url="sqlite+aiosqlite://",
    )

    with pytest.raises(V3ConfigError, match=named):
        async with AsyncExitStack() as stack:
            await build_runtime(settings, stack)


async def test_v3_without_its_settings_does_not_start() -> None:
    settings = hermetic_settings(api_version="v3", database_url="sqlite+aiosqlite://")

    with pytest.raises(V3ConfigError, match="WXPAY_API_V3_KEY"):
        async with AsyncExitStack() as stack:
            await build_runtime(settings, stack)


def test_dev_on_v3_generates_its_keys_once_and_shares_them_with_the_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # var/dev-v3 is made where the service runs, like var/wxpay.db

    first, simulator_v3 = with_dev_v3_keys(hermetic_settings(api_version="v3"))
    again, _ = with_dev_v3_keys(hermetic_settings(api_version="v3"))

    assert first.v3_missing == []
    assert simulator_v3 is not None
    assert first.wechatpay_public_key_id == simulator_v3.signing_keys[0].serial
    assert Path(str(first.mch_private_key_path)).is_file()
    assert again.wechatpay_public_key_id == first.wechatpay_public_key_id  # generated once


def test_dev_keys_are_not_generated_for_v2_or_when_any_v3_setting_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    _, none_v2 = with_dev_v3_keys(hermetic_settings())
    partial, none_partial = with_dev_v3_keys(
        hermetic_settings(api_version="v3", mch_cert_serial_no="ABCDEF0123456789")
    )

    assert (none_v2, none_partial) == (None, None)
    assert partial.api_v3_key is None  # an operator's half-set v3 is reported, not filled in
    assert not (tmp_path / "var").exists()
