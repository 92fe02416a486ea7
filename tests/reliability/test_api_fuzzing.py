"""API fuzzing: schemathesis generates requests from /openapi.json and sends them to a running
server process, authenticated as a user and as the admin: no request may cause a 5xx. On both
API versions: on v3 the orders it creates go through the v3 prepay, and the v3 notify URLs it
finds in the schema are live (on v2 they answer 404)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import ADMIN
from tests.plugins.simulator import SimulatorHandle
from tests.reliability.conftest import StartServices
from tests.reliability.scenario import PayVersion, add_product, login_users, record_figures

pytestmark = pytest.mark.reliability

SEED = 20261127
MAX_EXAMPLES = 30
MAX_SECONDS = 100


async def test_fuzzed_requests_from_the_openapi_schema_cause_no_server_error(
    start_services: StartServices,
    wechat: SimulatorHandle,
    api_version: PayVersion,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    [service] = start_services(count=1)
    [user] = await login_users(http, [service], wechat, 1)
    await add_product(http, service, price_fen=990)
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{service.base_url}/openapi.json",
        "--checks=not_a_server_error",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        f"--max-time={MAX_SECONDS}",
        "--request-timeout=10",
        "--no-color",
        f"--header=Authorization:{user['Authorization']}",
        f"--header=X-Admin-Token:{ADMIN['X-Admin-Token']}",
        f"--report-junit-path={tmp_path / 'fuzz.xml'}",
        "--report=junit",
    ]

    started = time.monotonic()
    run = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=MAX_SECONDS + 60
    )
    elapsed = time.monotonic() - started

    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12000:]
    assert "Exception in ASGI" not in service.log_text()
    record_figures(
        "api fuzzing",
        {
            "api_version": api_version.name,
            "seed": SEED,
            "max_examples_per_operation": MAX_EXAMPLES,
            "seconds": round(elapsed, 1),
            "summary": _summary(output),
        },
    )


def _summary(output: str) -> str:
    lines = [line.strip() for line in output.splitlines()]
    wanted = re.compile(r"(operations|test cases|generated|passed|failed|Test cases)", re.I)
    return " | ".join(line for line in lines if wanted.search(line))[-600:]


# What the fuzzer found, pinned on its own (in-process, fast).
HUGE = 2**70


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/orders", {"product_id": HUGE, "quantity": 1}),
        ("GET", f"/api/v1/orders?offset={HUGE}", None),
        ("GET", f"/api/v1/orders?limit=1&offset={HUGE}", None),
        ("POST", f"/api/v1/admin/products/{HUGE}/disable", None),
    ],
    ids=["product id", "offset", "offset with limit", "admin product id"],
)
async def test_numbers_beyond_bigint_are_refused_not_answered_500(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    pg_database_url: str,
    method: str,
    path: str,
    body: dict[str, int] | None,
) -> None:
    from tests.helpers import login

    auth = await login(client, fresh_simulator)

    response = await client.request(method, path, json=body, headers={**auth, **ADMIN})

    assert 400 <= response.status_code < 500, response.text


async def test_product_text_xml_cannot_carry_never_breaks_order_creation(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, pg_database_url: str
) -> None:
    from tests.helpers import login

    auth = await login(client, fresh_simulator)
    product = {"name": "套餐", "description": "短信\x01套餐", "price_fen": 990}
    added = await client.post("/api/v1/admin/products", json=product, headers=ADMIN)
    if added.status_code == 201:  # accepted: then ordering it must fail cleanly, not with 500
        body = {"product_id": added.json()["id"], "quantity": 1}
        response = await client.post("/api/v1/orders", json=body, headers=auth)
        assert response.status_code < 500, response.text
    else:
        assert added.status_code == 422
