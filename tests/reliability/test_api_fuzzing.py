"""API fuzzing: schemathesis generates requests from /openapi.json and sends them to a running
server process, authenticated as a user and as the admin: no request may cause a 5xx."""

from __future__ import annotations

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
from tests.reliability.scenario import add_product, login_users, record_figures

pytestmark = pytest.mark.reliability

SEED = 20261127
MAX_EXAMPLES = 30
MAX_SECONDS = 100


async def test_fuzzed_requests_from_the_openapi_schema_cause_no_server_error(
    start_services: StartServices,
    fresh_simulator: SimulatorHandle,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    [service] = start_services(count=1)
    [user] = await login_users(http, [service], fresh_simulator, 1)
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
    run = subprocess.run(command, capture_output=True, text=True, timeout=MAX_SECONDS + 60)
    elapsed = time.monotonic() - started

    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "Exception in ASGI" not in service.log_text()
    record_figures(
        "api fuzzing",
        {
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
