"""``make test-miniprogram``: the example mini-program's Node tests against running services.

Starts the service the way a developer does (dev mode, SQLite, the WeChat simulator mounted at
``/sim``) on free ports: once per payment configuration (v2 MD5, v2 HMAC-SHA256, v3 RSA with
the dev keys it generates under ``var/dev-v3``), and once more each with a session lifetime of
a few seconds, for the case where the server expires a token mid-purchase. Each runs on its
own copy of one temporary SQLite database, migrated and seeded with the demo products. Then
``node --test`` runs ``examples/miniprogram/test/*.test.js`` with the services' addresses in
``MP_BACKENDS``, and everything is stopped. The exit status is node's; anything that cannot
start fails the run, loudly.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.cli import run as run_cli
from app.config import DEV_API_KEY, DEV_APPID
from app.simulator.v3files import MERCHANT_PUBLIC_KEY
from tests.db import ROOT, migrate
from tests.hermetic import child_env, hermetic_settings, strip_ambient_settings
from tests.plugins.cluster import ServiceProcess, free_port, spawn_service, wait_ready

EXAMPLE = ROOT / "examples" / "miniprogram"
# Long enough for login and create to pass well inside it, short enough that a test can wait
# it out while the user "looks at the payment sheet".
SHORT_SESSION_SECONDS = 3
THROTTLED = {"WXPAY_LOGIN_RATE_PER_MINUTE": "1"}
# Where WXPAY_API_VERSION=v3 in dev keeps its generated keys, relative to the service's cwd.
DEV_V3_PUBLIC_KEY_DIR = Path("var/dev-v3/public-key")


@dataclass(frozen=True)
class PayConfig:
    name: str
    api_version: str
    sign_type: str


PAY_CONFIGS = (
    PayConfig("v2 MD5", "v2", "MD5"),
    PayConfig("v2 HMAC-SHA256", "v2", "HMAC-SHA256"),
    PayConfig("v3 RSA", "v3", "RSA"),
)


def main() -> int:
    node = shutil.which("node")
    if node is None:
        print("test-miniprogram: `node` not found; install Node 18+ (Debian: nodejs)", flush=True)
        return 1
    strip_ambient_settings()
    with tempfile.TemporaryDirectory(prefix="wxpay-mp-") as tmp, ExitStack() as stack:
        seeded = seeded_database(Path(tmp))
        started = {
            (config.name, seconds): stack.enter_context(
                service(config, seeded, Path(tmp) / f"{n}-{seconds or 'main'}", seconds)
            )
            for n, config in enumerate(PAY_CONFIGS)
            for seconds in (None, SHORT_SESSION_SECONDS)
        }
        # The first configuration once more, allowing one login a minute in all: the client
        # meets the server's own 429 (app.ratelimits), not only the stand-in's.
        throttled = stack.enter_context(
            service(PAY_CONFIGS[0], seeded, Path(tmp) / "throttled", None, THROTTLED)
        )
        for each in (*started.values(), throttled):
            wait_ready(each.process)
        backends = [
            {
                **started[config.name, None].backend_json(),
                "shortSession": started[config.name, SHORT_SESSION_SECONDS].backend_json(),
            }
            for config in PAY_CONFIGS
        ]
        backends[0]["throttled"] = throttled.backend_json()
        status = run_node(node, backends)
        if status != 0:
            for each in started.values():
                print(f"--- {each.process.base_url} log (tail) ---", flush=True)
                print(each.process.log_text()[-3000:], flush=True)
        return status


def seeded_database(tmp: Path) -> Path:
    path = tmp / "seeded.db"
    url = sqlite_url(path)
    migrate(url)
    print(asyncio.run(run_cli(["seed-demo"], hermetic_settings(database_url=url))), flush=True)
    return path


@dataclass(frozen=True)
class Started:
    config: PayConfig
    process: ServiceProcess
    workdir: Path
    session_seconds: int | None

    def backend_json(self) -> dict[str, object]:
        """What the Node tests need: where the service is and what WeChat's client checks
        ``paySign`` with (the dev APIv2 key, or the merchant public key it generated)."""
        backend: dict[str, object] = {
            "name": self.config.name,
            "baseUrl": self.process.base_url,
            "appId": DEV_APPID,
            "signType": self.config.sign_type,
            "sessionSeconds": self.session_seconds,
        }
        if self.config.api_version == "v2":
            backend["apiKey"] = DEV_API_KEY
        else:
            key = self.workdir / DEV_V3_PUBLIC_KEY_DIR / MERCHANT_PUBLIC_KEY
            backend["merchantPublicKeyPem"] = key.read_text()
        return backend


@contextmanager
def service(
    config: PayConfig,
    seeded: Path,
    workdir: Path,
    session_seconds: int | None,
    extra: dict[str, str] | None = None,
) -> Iterator[Started]:
    workdir.mkdir()
    database = workdir / "wxpay.db"
    shutil.copyfile(seeded, database)
    port = free_port()
    settings = {
        "WXPAY_DATABASE_URL": sqlite_url(database),
        "WXPAY_SELF_BASE_URL": f"http://127.0.0.1:{port}",
        "WXPAY_SWEEP_INTERVAL_SECONDS": "0",  # only the client's ?sync=true asks WeChat
        "WXPAY_API_VERSION": config.api_version,
    }
    if config.api_version == "v2":
        settings["WXPAY_SIGN_TYPE"] = config.sign_type
    if session_seconds is not None:
        settings["WXPAY_SESSION_TTL_SECONDS"] = str(session_seconds)
    settings |= extra or {}
    with spawn_service(port, child_env(**settings), workdir) as process:
        yield Started(config, process, workdir, session_seconds)


def run_node(node: str, backends: list[dict[str, object]]) -> int:
    files = sorted(str(p) for p in (EXAMPLE / "test").glob("*.test.js"))
    env = {**child_env(), "MP_BACKENDS": json.dumps(backends)}
    command = [node, "--test", "--test-reporter=spec", *files]
    print("$", " ".join(command[:3]), "examples/miniprogram/test/*.test.js", flush=True)
    return subprocess.run(command, cwd=EXAMPLE, env=env, check=False).returncode


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


if __name__ == "__main__":
    sys.exit(main())
