"""How routes reach the simulator instance that owns the app they are served by."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.simulator.core import Simulator


def get_simulator(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


SimulatorDep = Annotated[Simulator, Depends(get_simulator)]
