"""Plumbing shared by the HTTP benchmarks: databases, server processes, load and statistics.

Everything is loopback and bounded: databases are created fresh and dropped, processes are
started here and terminated here, and every load run has a request count and a time cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from starlette.types import ASGIApp, Message

if TYPE_CHECKING:
    from app.simulator.v3keys import DevMaterial

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PG = "postgres@127.0.0.1:5432"
# The checkout whose ``app`` the service runs: another one (a git worktree of an older commit,
# say) measures before and after with the same scripts and the same reference.
APP_ROOT = Path(os.environ.get("BENCH_APP_ROOT", str(ROOT))).resolve()
UVICORN_FLAGS = ("--no-proxy-headers", "--log-level", "warning", "--no-access-log")

# A WeChat address for services that make no call to WeChat (the notify benchmarks).
NO_WECHAT = "http://127.0.0.1:9"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pg_url(database: str, *, driver: str = "") -> str:
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{PG}/{database}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(pg_url("postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_database(label: str, app_root: Path = APP_ROOT) -> Iterator[str]:
    """A new PostgreSQL database migrated to head (``alembic upgrade head``); dropped after."""
    name = f"wxpay_bench_{label}_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        alembic(name, "upgrade", "head", app_root=app_root)
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def alembic(database: str, *args: str, timeout: float = 60, app_root: Path = APP_ROOT) -> None:
    """``alembic *args`` on ``database``, in its own process as an operator would run it."""
    subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=app_root,  # the schema the measured code expects
        env={**clean_env(), "WXPAY_DATABASE_URL": pg_url(database, driver="asyncpg")},
        check=True,
        capture_output=True,
        timeout=timeout,
    )


def clean_env() -> dict[str, str]:
    # An empty WXPAY_ENV_FILE: servers run from the checkout, which may hold a production .env.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WXPAY_", "REF_"))}
    return {**env, "WXPAY_ENV_FILE": ""}


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def server_process(
    command: Sequence[str],
    env: dict[str, str],
    ready_path: str,
    port: int,
    cwd: Path = ROOT,
    log: Path | None = None,
) -> Iterator[Server]:
    """Start ``command`` (listening on ``port``), wait for ``ready_path`` to answer 200; its
    output goes to ``log`` when given."""
    with open(log, "wb") if log else contextlib.nullcontext() as out:
        process = subprocess.Popen(
            list(command), cwd=cwd, env={**clean_env(), **env}, stdout=out, stderr=out
        )
        server = Server(f"http://127.0.0.1:{port}", process)
        try:
            _wait_ready(server, ready_path)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if log:
                print(f"  ({log.stat().st_size / 1e6:.1f} MB of logs from {command[3]})")


def _wait_ready(server: Server, path: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.url} exited with {server.process.returncode}")
        try:
            with urllib.request.urlopen(server.url + path, timeout=1) as reply:  # noqa: S310
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.url} did not become ready")


def uvicorn_command(app: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), *UVICORN_FLAGS,
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class V3Keys:
    """One generated v3 merchant (``app.simulator.v3files``), shared by the service, the
    reference and the simulator, so all three sign and verify with the same keys."""

    material: DevMaterial
    directory: Path

    @classmethod
    def under(cls, key_dir: Path) -> V3Keys:
        # Imported here: bench/reads.py puts BENCH_APP_ROOT's ``app`` first on the path after
        # importing this module, and nothing may have imported ``app`` before that.
        from app.config import DEV_MCH_ID
        from app.simulator.v3files import dev_material

        material, directory = dev_material(key_dir, DEV_MCH_ID, certificate_mode=False)
        return cls(material, directory)

    @property
    def env(self) -> dict[str, str]:
        """The service's v3 settings; the reference reads the same ones."""
        from app.simulator.v3files import MERCHANT_PRIVATE_KEY, WECHATPAY_PUBLIC_KEY

        return {
            "WXPAY_API_VERSION": "v3",
            "WXPAY_API_V3_KEY": self.material.config.api_v3_key,
            "WXPAY_MCH_PRIVATE_KEY_PATH": str(self.directory / MERCHANT_PRIVATE_KEY),
            "WXPAY_MCH_CERT_SERIAL_NO": self.material.config.merchant_serial_no,
            "WXPAY_WECHATPAY_PUBLIC_KEY_PATH": str(self.directory / WECHATPAY_PUBLIC_KEY),
            "WXPAY_WECHATPAY_PUBLIC_KEY_ID": self.material.wechatpay_public_key_id,
            "SIM_V3_DIR": str(self.directory.parent),
        }


def version_env(keys: V3Keys | None) -> dict[str, str]:
    return keys.env if keys else {}


# ``--observability`` of the HTTP benchmarks: "off" is the service as measured before /metrics
# existed (no metrics, warnings only, no access log); "on" is the service as the image runs it:
# /metrics in multiprocess mode, JSON logs at INFO with the service's access line (uvicorn's off,
# as the image's entrypoint starts it), all written to a file.
OBSERVABILITY = ("off", "on", "both")


def observed_targets(choice: str) -> list[str]:
    """The service's targets for an ``--observability`` choice: "ours" (off), "observed" (on)."""
    return {"off": ["ours"], "on": ["observed"], "both": ["ours", "observed"]}[choice]


def baseline_targets(choice: str) -> list[str]:
    """A ``--baseline`` checkout's targets for an ``--observability`` choice."""
    both = ["baseline", "baseline-observed"]
    return {"off": both[:1], "on": both[1:], "both": both}[choice]


def baseline_service(
    root: Path, target: str, database: str, workers: int, wechat_url: str, extra: dict[str, str]
) -> AbstractContextManager[Server]:
    """A ``--baseline`` checkout served as ``target`` says. A checkout from before the service
    wrote its own access line (5cc4cdd) is observed with uvicorn's, as its image ran it."""
    observed = target == "baseline-observed"
    return service(
        database, workers, wechat_url, extra, app_root=root, observed=observed,
        uvicorn_access_log=observed,
    )  # fmt: skip


@contextmanager
def service(
    database: str,
    workers: int,
    wechat_url: str = NO_WECHAT,
    extra: dict[str, str] | None = None,
    *,
    observed: bool = False,
    app_root: Path = APP_ROOT,
    uvicorn_access_log: bool = False,
) -> Iterator[Server]:
    """The service itself: ``uvicorn app.main:app`` on PostgreSQL; ``extra`` adds settings.
    ``uvicorn_access_log``: uvicorn's access line on too (how checkouts from before the
    service wrote its own were observed)."""
    port = free_port()
    env = {
        "WXPAY_DATABASE_URL": pg_url(database, driver="asyncpg"),
        "WXPAY_PAY_API_BASE": wechat_url,
        "WXPAY_MINIPROGRAM_API_BASE": wechat_url,
        "WXPAY_SIMULATOR_MOUNT": "false",
        "WXPAY_SWEEP_INTERVAL_SECONDS": "0",
        "WXPAY_LOG_LEVEL": "WARNING",
        "WXPAY_METRICS": "false",
        **(extra or {}),
    }
    command = uvicorn_command("app.main:app", port, workers)
    with tempfile.TemporaryDirectory(prefix="wxpay-bench-obs-") as scratch:
        log = None
        if observed:
            env |= observed_env(Path(scratch))
            command[command.index("--log-level") + 1] = "info"
            if uvicorn_access_log:
                command.remove("--no-access-log")
            log = Path(scratch, "service.log")
        with server_process(command, env, "/readyz", port, cwd=app_root, log=log) as s:
            yield s


def observed_env(scratch: Path) -> dict[str, str]:
    metrics = scratch / "metrics"
    metrics.mkdir()
    return {
        "WXPAY_METRICS": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "WXPAY_LOG_FORMAT": "json",
        "WXPAY_LOG_LEVEL": "INFO",
    }


@contextmanager
def reference(
    database: str,
    workers: int,
    wechat_url: str = NO_WECHAT,
    extra: dict[str, str] | None = None,
) -> Iterator[Server]:
    """The minimal raw-asyncpg reference handlers (bench/reference.py) under uvicorn."""
    port = free_port()
    env = {
        "REF_DATABASE_URL": pg_url(database),
        "REF_PAY_API_BASE": wechat_url,
        "PYTHONPATH": str(BENCH),
        **(extra or {}),
    }
    command = uvicorn_command("reference:app", port, workers)
    with server_process(command, env, "/healthz", port) as s:
        yield s


@contextmanager
def webhook_receiver(secret: str) -> Iterator[Server]:
    """examples/webhook_receiver.py in its own process, verifying with ``secret``."""
    port = free_port()
    command = uvicorn_command("examples.webhook_receiver:app", port, 1)
    env = {"WXPAY_WEBHOOK_SECRETS": secret}
    with server_process(command, env, "/healthz", port, cwd=APP_ROOT) as s:
        yield s


@contextmanager
def simulator(latency_ms: float, extra: dict[str, str] | None = None) -> Iterator[Server]:
    """The local WeChat (bench/sim_app.py) in its own process, answering after ``latency_ms``;
    with ``SIM_V3_DIR`` in ``extra`` it also speaks v3 with those keys."""
    port = free_port()
    env = {"SIM_LATENCY_MS": str(latency_ms), "PYTHONPATH": str(BENCH), **(extra or {})}
    command = uvicorn_command("sim_app:app", port, 1)
    with server_process(command, env, "/_control/latency", port) as s:
        yield s


@dataclass(frozen=True, slots=True)
class LoadResult:
    sent: int
    ok: int
    statuses: dict[str, int]
    elapsed: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float = 0.0  # CPU the server process used during the run (when measured)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_ms_per_ok(self) -> float:
        """Server CPU per answered request: unlike the rate, barely moved by other work on the
        machine (the process's own CPU time, not wall time)."""
        return self.server_cpu_s / self.ok * 1000 if self.ok else float("nan")


def run_load(
    url: str,
    requests: dict[str, Any],
    *,
    concurrency: int,
    count: int,
    time_cap: float,
    ok_status: int,
    server_pid: int | None = None,
) -> LoadResult:
    """Fire ``count`` requests (``requests`` from ``loadgen.request_file``) from a separate
    process with ``concurrency`` in flight, stopping at ``time_cap`` seconds; with
    ``server_pid``, also the CPU that process used meanwhile."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump(requests, spec)
    command = [
        sys.executable, str(BENCH / "loadgen.py"), "--url", url, "--spec", spec.name,
        "--concurrency", str(concurrency), "--count", str(count), "--time-cap", str(time_cap),
    ]  # fmt: skip
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=time_cap + 60
        )
    finally:
        os.unlink(spec.name)
    cpu = cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    data = json.loads(out.stdout)
    ok = int(data["statuses"].get(str(ok_status), 0))
    return LoadResult(
        data["sent"], ok, data["statuses"], data["elapsed"], data["p50_ms"], data["p99_ms"], cpu
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def command_line() -> str:
    return shlex.join([".venv/bin/python", *sys.argv])


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (uvicorn's workers when ``--workers`` > 1)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its waited-for children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def asgi_scope(path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A GET request's ASGI scope, for calling an app directly (no sockets, no server)."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [(b"host", b"127.0.0.1")]
        + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }  # fmt: skip


async def asgi_cpu_per_call(
    app: ASGIApp, path: str, calls: int, headers: dict[str, str] | None = None
) -> float:
    """µs of this process's CPU per ``GET path`` straight into ``app``; all must answer 200."""
    template = asgi_scope(path, headers)
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.process_time()
    for _ in range(calls):
        await app(dict(template), receive, send)
    used = time.process_time() - started
    if statuses != [200] * calls:
        raise RuntimeError(f"{path} answered {sorted(set(statuses))}")
    return used / calls * 1e6
