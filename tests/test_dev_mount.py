"""The simulator mounted at /sim in dev (issue 15, item 1): one process only, notifies only to
this service, and an image that defaults to production."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from app.config import ConfigError
from app.main import create_app
from app.orders.numbers import new_out_trade_no
from app.wechat.signing import sign
from app.wechat.xmlcodec import from_xml, to_xml
from tests.db import ROOT
from tests.hermetic import child_env, hermetic_settings
from tests.plugins.cluster import free_port, spawn_service

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


@asynccontextmanager
async def mounted_service(database_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The service in dev with the simulator mounted, started (lifespan) in this process;
    the client's base is the mount."""
    settings = hermetic_settings(database_url=database_url, sweep_interval_seconds=0, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s.test/sim") as http:
            yield http


@pytest.fixture
def other_process_holds(tmp_path: Path) -> Iterator[str]:
    """A lock file held by another process, as a first uvicorn worker would hold it."""
    lock = str(tmp_path / "sim.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, lock], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield lock
    finally:
        holder.kill()
        holder.wait()


async def test_a_second_process_refuses_to_mount_the_simulator(
    database_url: str, other_process_holds: str
) -> None:
    with pytest.raises(ConfigError, match=r"python -m app\.simulator"):
        async with mounted_service(database_url, simulator_lock_path=other_process_holds):
            pass


async def test_apps_in_one_process_share_the_lock_and_release_it_at_shutdown(
    database_url: str, tmp_path: Path
) -> None:
    lock = str(tmp_path / "sim.lock")
    async with mounted_service(database_url, simulator_lock_path=lock):
        async with mounted_service(database_url, simulator_lock_path=lock):
            pass
        assert _another_process_can_take(lock) is False
    assert _another_process_can_take(lock) is True


async def test_without_the_mount_no_lock_is_taken(
    database_url: str, other_process_holds: str
) -> None:
    settings = hermetic_settings(
        database_url=database_url,
        simulator_mount=False,
        simulator_lock_path=other_process_holds,
        pay_api_base="http://127.0.0.1:9",
        miniprogram_api_base="http://127.0.0.1:9",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass  # the standalone-simulator set-up: any number of workers


def test_uvicorn_with_two_workers_in_dev_refuses_to_start(tmp_path: Path) -> None:
    env = child_env(
        WXPAY_DATABASE_URL="sqlite+aiosqlite:///var/x.db", WXPAY_SWEEP_INTERVAL_SECONDS="0"
    )
    with spawn_service(free_port(), env, tmp_path, workers=2) as service:
        try:
            service.process.wait(timeout=90)  # uvicorn's parent itself exits 0 here
        except subprocess.TimeoutExpired:
            pytest.fail("uvicorn kept running with two simulators: " + service.log_text()[-2000:])
    log = service.log_text()
    assert "already served by another process" in log
    assert "python -m app.simulator" in log
    assert "failed to start, stopping the parent process" in log


def _another_process_can_take(lock: str) -> bool:
    probe = (
        "import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n"
        "    sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", probe, lock], check=False).returncode == 0


# --- notifies only to this service ------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append(body)
        reply = b"<xml><return_code><![CDATA[SUCCESS]]></return_code></xml>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    """Another HTTP server on this machine: not this service."""
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/steal"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("listed", [False, True], ids=["not listed", "listed"])
async def test_the_mounted_simulator_notifies_other_hosts_only_when_listed(
    database_url: str, tmp_path: Path, receiver: str, listed: bool
) -> None:
    hosts = {"simulator_notify_hosts": "127.0.0.1"} if listed else {}
    lock = str(tmp_path / "sim.lock")
    async with mounted_service(database_url, simulator_lock_path=lock, **hosts) as sim:
        prepay_id = await _order_notifying(sim, receiver)
        (await sim.post("/_control/pay", json={"prepay_id": prepay_id})).raise_for_status()
        attempt = await _first_attempt(sim)

    if listed:
        assert attempt["verdict"] == "acknowledged"
        assert len(Receiver.received) == 1
    else:
        assert attempt["verdict"] == "error"
        assert "WXPAY_SIMULATOR_NOTIFY_HOSTS" in attempt["reply"]
        assert Receiver.received == []


async def _order_notifying(sim: httpx.AsyncClient, notify_url: str) -> str:
    """An order placed at the mount, as any caller could, with its own notify_url."""
    openid = (await sim.post("/_control/login-code", json={})).json()["openid"]
    settings = hermetic_settings()
    fields: dict[str, object] = {
        "appid": settings.appid,
        "mch_id": settings.mch_id,
        "nonce_str": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "body": "套餐",
        "out_trade_no": new_out_trade_no(),
        "total_fee": 1,
        "spbill_create_ip": "203.0.113.7",
        "notify_url": notify_url,
        "trade_type": "JSAPI",
        "openid": openid,
    }
    fields["sign"] = sign(fields, settings.api_key.get_secret_value())
    reply = from_xml((await sim.post("/pay/unifiedorder", content=to_xml(fields))).content)
    assert reply["result_code"] == "SUCCESS", reply
    return reply["prepay_id"]


async def _first_attempt(sim: httpx.AsyncClient) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        attempts = (await sim.get("/_control/notifies")).json()
        done = [a for a in attempts if a["verdict"] != "pending"]
        if done:
            return dict(done[0])
        await asyncio.sleep(0.05)
    raise AssertionError("no notify attempt finished")


# --- the image --------------------------------------------------------------------------


def test_the_image_defaults_to_production() -> None:
    # No Docker engine here: the Dockerfile is read, not built.
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    runtime_stage = dockerfile.split("AS runtime", 1)[1]
    assert "ENV WXPAY_ENV=production" in runtime_stage
