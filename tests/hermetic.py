"""Keeping the machine the tests run on out of their results.

A developer's shell may export ``WXPAY_*`` (a real admin token, ``WXPAY_ENV=production``) and the
checkout may hold the production ``.env`` the README's Docker section asks for. Tests build
their settings from explicit values and defaults only, and every process they start gets only
the ``WXPAY_*`` values the test gives it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from app.config import ENV_FILE_VARIABLE, Settings

PREFIX = "WXPAY_"
# The one ambient setting the suite reads on purpose: which database server to test against.
TEST_DATABASE_VARIABLE = "WXPAY_TEST_DATABASE_URL"
AMBIENT_METRICS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def strip_ambient_settings() -> None:
    """Remove every ambient ``WXPAY_*`` (but the test database) from this process, and tell
    ``get_settings()`` to read no ``.env``: here (``app.main`` builds its module-level app on
    import) and in every child that inherits this environment."""
    for name in [n for n in os.environ if n.startswith(PREFIX) and n != TEST_DATABASE_VARIABLE]:
        del os.environ[name]
    # prometheus-client reads it once, at import: ambient, it would make the suite's figures
    # the sum of whatever else writes to that directory.
    for name in AMBIENT_METRICS_VARIABLES:
        os.environ.pop(name, None)
    os.environ[ENV_FILE_VARIABLE] = ""


# The simulator mount's one-process lock (app.devmount) for apps built in this test process:
# its own file, so a developer's `make run` in the checkout (var/) never blocks the tests.
TEST_MOUNT_LOCK = str(Path(tempfile.gettempdir()) / f"wxpay-tests-{os.getpid()}" / "sim.lock")


def hermetic_settings(**values: Any) -> Settings:
    """``Settings`` from ``values`` and the defaults: no ``.env``, and (stripped at start-up)
    no ambient ``WXPAY_*``."""
    values.setdefault("simulator_lock_path", TEST_MOUNT_LOCK)
    return Settings(_env_file=None, **values)


def child_env(**settings: str) -> dict[str, str]:
    """The environment for a process a test starts: this one's, with no ``WXPAY_*`` but
    ``settings`` and an empty ``WXPAY_ENV_FILE`` (``.env`` in its working directory is ignored)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(PREFIX) and k not in AMBIENT_METRICS_VARIABLES
    }
    return {**env, ENV_FILE_VARIABLE: "", **settings}
