"""The simulator as an importable ASGI app, so benchmarks run it under plain uvicorn flags.

``python -m app.simulator`` logs every request at INFO; under load that logging costs the
simulator a large share of its CPU. Here it runs with ``--no-access-log``; the latency comes
from ``SIM_LATENCY_MS``.
"""

from __future__ import annotations

import os

from app.config import Settings
from app.simulator.config import SimulatorConfig
from app.simulator.core import create_simulator_app

app = create_simulator_app(
    SimulatorConfig.from_settings(
        Settings(_env_file=None), latency_ms=float(os.environ["SIM_LATENCY_MS"])
    )
)
