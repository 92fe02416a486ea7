"""The command line: catalogue management, demo seed and a one-off sweep."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db import ROOT
from tests.helpers import scalar
from tests.hermetic import child_env


def cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=child_env(WXPAY_DATABASE_URL=database_url, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_products_can_be_added_listed_and_disabled(
    database_url: str, engine: AsyncEngine
) -> None:
    added = cli(
        database_url,
        "products",
        "add",
        "--name",
        "套餐",
        "--description",
        "短信平台-短信套餐购买",
        "--price-fen",
        "990",
    )
    product_id = int(added.stdout.split()[-1])
    disabled = cli(database_url, "products", "disable", str(product_id))
    listed = cli(database_url, "products", "list")

    assert added.returncode == disabled.returncode == listed.returncode == 0
    assert listed.stdout.split("\t")[:3] == [str(product_id), "990", "off"]
    assert await scalar(engine, "SELECT active FROM products") in (False, 0)


async def test_seed_demo_fills_only_an_empty_catalogue(
    database_url: str, engine: AsyncEngine
) -> None:
    first = cli(database_url, "seed-demo")
    second = cli(database_url, "seed-demo")

    assert "added 3 demo products" in first.stdout
    assert "nothing added" in second.stdout
    assert await scalar(engine, "SELECT count(*) FROM products") == 3


def test_disabling_an_unknown_product_fails_clearly(database_url: str, engine: AsyncEngine) -> None:
    result = cli(database_url, "products", "disable", "424242")

    assert result.returncode == 1
    assert result.stderr.startswith("error: PRODUCT_NOT_FOUND:")
    assert "Traceback" not in result.stderr


async def test_sweep_runs_once_from_the_command_line(
    database_url: str, engine: AsyncEngine
) -> None:
    result = cli(database_url, "sweep", WXPAY_PAY_API_BASE="http://127.0.0.1:9")

    assert result.returncode == 0
    assert result.stdout.strip() == "claimed 0, paid 0, closed 0, failed 0"
