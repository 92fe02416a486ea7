"""The ``Simulator``: one in-memory WeChat (login + Pay v2) with its FastAPI app.

Starlette does not run a mounted sub-app's lifespan, so a host that mounts ``simulator.app``
calls ``await simulator.start()`` and ``await simulator.aclose()`` from its own lifespan.
``create_simulator_app`` builds a standalone app whose lifespan does that itself.
"""

from __future__ import annotations

from types import TracebackType

import httpx
from fastapi import FastAPI

from app.simulator.clock import SimClock
from app.simulator.config import SimulatorConfig
from app.simulator.faults import FaultBook
from app.simulator.miniprogram import MiniProgram
from app.simulator.notify import Notifier
from app.simulator.pay import PayDesk
from app.simulator.refunds import RefundDesk
from app.simulator.state import SimState


class Simulator:
    def __init__(
        self,
        config: SimulatorConfig,
        *,
        notify_transport: httpx.AsyncBaseTransport | None = None,
        standalone: bool = False,
    ) -> None:
        """``notify_transport`` replaces the network for notify deliveries (tests only)."""
        from app.simulator.web import build_app  # the routes need this class, hence here

        self.config = config
        self.clock = SimClock()
        self.state = SimState()
        self.faults = FaultBook()
        self.latency_ms = config.latency_ms
        self.miniprogram = MiniProgram(config, self.state, self.clock)
        self.notifier = Notifier(config, self.state, self.clock, self.faults, notify_transport)
        self.pay = PayDesk(config, self.state, self.clock, self.notifier)
        self.refunds = RefundDesk(config, self.state, self.clock, self.notifier, self.pay)
        self.app: FastAPI = build_app(self, standalone=standalone)

    async def start(self) -> None:
        """Open the notify client; call from the host's lifespan when mounted."""
        await self.notifier.start()

    async def aclose(self) -> None:
        """Cancel pending deliveries and close the notify client."""
        await self.notifier.aclose()

    async def reset(self) -> None:
        """Forget every user, order, refund, delivery and fault; the clock returns to now.

        Pending deliveries and refund settlements are cancelled first.
        """
        await self.notifier.cancel_all()
        self.state.clear()
        self.faults.clear()
        self.clock.reset()
        self.latency_ms = self.config.latency_ms

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def create_simulator_app(config: SimulatorConfig) -> FastAPI:
    """A standalone simulator app (its lifespan starts and stops the background machinery)."""
    return Simulator(config, standalone=True).app
