"""The suite is hermetic: a developer's ``WXPAY_*`` and a production ``.env`` change no result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.db import ROOT
from tests.plugins.cluster import service_env

# What a production checkout holds (the README's Docker section asks for it): secrets good
# enough that production start-up accepts them, so nothing but isolation keeps them out.
PRODUCTION_ENV_FILE = """\
WXPAY_ENV=production
WXPAY_APPID=wx9999999999999999
WXPAY_MCH_ID=1234567890
WXPAY_APP_SECRET=production-app-secret-0123456789
WXPAY_API_KEY=productionapikey0123456789abcdef
WXPAY_SECRET_KEY=production-secret-key-0123456789abcdef
WXPAY_ADMIN_TOKEN=production-admin-token-0123456789
WXPAY_NOTIFY_URL=https://pay.example.com/wechat/pay/notify
WXPAY_DATABASE_URL=postgresql+asyncpg://wxpay@db.example.com/wxpay
"""

# A slice that goes through every way settings reach a test: the `settings` fixture and the
# simulator's merchant (the app secret), the admin token, `import app.main` (its module-level
# app reads get_settings()) and a `python -m app.cli` child process.
SLICE = [
    "tests/products/test_catalogue.py",
    "tests/auth/test_login.py::test_session_key_never_reaches_a_response_or_a_log_line",
    "tests/test_cli.py::test_sweep_runs_once_from_the_command_line",
]


def test_ambient_settings_and_a_production_env_file_change_no_test_result(tmp_path: Path) -> None:
    # pydantic-settings reads .env from the working directory, so the slice runs from one that
    # holds a production .env (the checkout itself is left alone).
    env_file = tmp_path / ".env"
    env_file.write_text(PRODUCTION_ENV_FILE, encoding="utf-8")
    hostile = {
        **os.environ,
        "WXPAY_ENV": "production",
        "WXPAY_ADMIN_TOKEN": "exported-admin-token",
        "WXPAY_APP_SECRET": "exported-app-secret",
        "WXPAY_DATABASE_URL": "postgresql://nowhere/x",
        "WXPAY_ENV_FILE": str(env_file),
    }

    result = subprocess.run(
        [sys.executable, "-m", "pytest", *(str(ROOT / t) for t in SLICE)],
        cwd=tmp_path,
        env=hostile,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "11 passed" in result.stdout


def test_a_service_process_gets_only_the_settings_its_scenario_gives() -> None:
    env = service_env(
        "sqlite+aiosqlite:///x.db", "http://sim", 8001, {"WXPAY_NOTIFY_URL": "http://n"}
    )

    wxpay = {k: v for k, v in env.items() if k.startswith("WXPAY_")}
    assert wxpay["WXPAY_NOTIFY_URL"] == "http://n"  # the scenario's value wins over the default
    assert wxpay["WXPAY_ENV_FILE"] == ""  # and no .env in the checkout is read
    assert "WXPAY_TEST_DATABASE_URL" not in wxpay
