"""The service as separate uvicorn processes pointed at the simulator, each with its own log.

Each process gets its own port and its own notify URL, so the simulator's notifies for an
order go back to the process that created it; two processes therefore share one database the
way two replicas behind a load balancer do.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.hermetic import child_env

NOTIFY_PATH = "/wechat/pay/notify"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServiceProcess:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def notify_url(self) -> str:
        return self.base_url + NOTIFY_PATH

    def worker_pids(self) -> list[int]:
        """The processes serving requests: the uvicorn supervisor's spawned workers, or the
        process itself when it runs a single worker."""
        children = _children(self.process.pid)
        workers = [pid for pid in children if "spawn_main" in _cmdline(pid)]
        return workers or [self.process.pid]

    def kill_worker(self) -> int:
        """``kill -9`` one worker; returns its pid."""
        pid = self.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        return pid

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def service_env(
    database_url: str, simulator_url: str, port: int, extra: dict[str, str]
) -> dict[str, str]:
    env = child_env(
        WXPAY_DATABASE_URL=database_url,
        WXPAY_SIMULATOR_MOUNT="false",
        WXPAY_SWEEP_INTERVAL_SECONDS="0",
        WXPAY_PAY_API_BASE=simulator_url,
        WXPAY_MINIPROGRAM_API_BASE=simulator_url,
        WXPAY_SELF_BASE_URL=f"http://127.0.0.1:{port}",
        WXPAY_NOTIFY_URL=f"http://127.0.0.1:{port}{NOTIFY_PATH}",
        WXPAY_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


@contextmanager
def running_services(
    database_url: str,
    simulator_url: str,
    log_dir: Path,
    *,
    count: int = 2,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[list[ServiceProcess]]:
    """``count`` separate ``uvicorn app.main:app --workers N`` servers, ready when yielded."""
    with ExitStack() as stack:
        services = [
            stack.enter_context(_spawn(database_url, simulator_url, log_dir, workers, env or {}))
            for _ in range(count)
        ]
        for service in services:
            wait_ready(service)
        yield services


def _spawn(
    database_url: str, simulator_url: str, log_dir: Path, workers: int, extra: dict[str, str]
) -> AbstractContextManager[ServiceProcess]:
    port = free_port()
    env = service_env(database_url, simulator_url, port, extra)
    return spawn_service(port, env, log_dir, workers=workers)


@contextmanager
def spawn_service(
    port: int, env: dict[str, str], log_dir: Path, *, workers: int = 1, log_level: str = "warning"
) -> Iterator[ServiceProcess]:
    """``uvicorn app.main:app`` on ``port`` with exactly ``env``, run in ``log_dir`` so that
    no ``.env`` file is read; stopped when the block ends. Not ready yet: see ``wait_ready``."""
    log_path = log_dir / f"service-{port}.log"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-proxy-headers",
        "--log-level",
        log_level,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=log_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield ServiceProcess(f"http://127.0.0.1:{port}", process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_ready(service: ServiceProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"the service exited: {service.log_text()[-2000:]}")
        try:
            if httpx.get(f"{service.base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the service did not become ready")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
