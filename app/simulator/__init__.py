"""A faithful local WeChat: code2session, Pay v2 and (given ``SimulatorConfig.v3`` keys) Pay v3,
notify delivery with retries, cashier page.

Use ``Simulator(config)`` to mount it (call ``start``/``aclose`` from the host lifespan) or
``create_simulator_app(config)`` for a standalone app; ``python -m app.simulator`` serves one.
"""

from app.simulator.config import SimulatorConfig, SimulatorRefused
from app.simulator.core import Simulator, create_simulator_app

__all__ = ["Simulator", "SimulatorConfig", "SimulatorRefused", "create_simulator_app"]
