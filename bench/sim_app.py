"""The simulator as an importable ASGI app, so benchmarks run it under plain uvicorn flags.

``python -m app.simulator`` logs every request at INFO; under load that logging costs the
simulator a large share of its CPU. Here it runs with ``--no-access-log``; the latency comes
from ``SIM_LATENCY_MS``.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.config import Settings
from app.simulator.config import SimulatorConfig
from app.simulator.core import create_simulator_app
from app.simulator.v3files import dev_material

_settings = Settings(_env_file=None)
_v3_dir = os.environ.get("SIM_V3_DIR")  # v3 keys written by the benchmark (harness.V3Keys)
_v3 = dev_material(Path(_v3_dir), _settings.mch_id, certificate_mode=False)[0] if _v3_dir else None

app = create_simulator_app(
    SimulatorConfig.from_settings(
        _settings,
        latency_ms=float(os.environ["SIM_LATENCY_MS"]),
        v3=_v3.config if _v3 else None,
    )
)
