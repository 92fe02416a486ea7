"""The ``Simulator``: one in-memory WeChat (login, Pay v2, and Pay v3 when it has v3 keys)
with its FastAPI app.

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
from app.simulator.v3envelope import WeChatPayKeys
from app.simulator.v3pay import V3PayDesk
from app.simulator.v3refunds import V3RefundDesk


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
        self.v3_keys = WeChatPayKeys(config.v3, config.mch_id) if config.v3 else None
        self.miniprogram = MiniProgram(config, self.state, self.clock)
        self.notifier = Notifier(
            config, self.state, self.clock, self.faults, notify_transport, self.v3_keys
        )
        self.pay = PayDesk(config, self.state, self.clock, self.notifier)
        self.refunds = RefundDesk(
            config, self.state, self.clock, self.notifier, self.pay, self.faults
        )
        self.v3_pay = V3PayDesk(config, self.state, self.clock, self.pay)
        self.v3_refunds = V3RefundDesk(config, self.state, self.clock, self.refunds)
        self.app: FastAPI = build_app(self, standalone=standalone)

    async def start(self) -> None:
        """Open the notify client; call from the host's lifespan when mounted."""
        await self.notifier.start()

    async def aclose(self) -> None:
        """Cancel pending deliveries and close the notify client."""
        await self.notifier.aclose()

    async def reset(self) -> None:
        """Forget every user, order, refund, delivery and fault; the clock returns to now and
        the first platform certificate signs again.

        Pending deliveries and refund settlements are cancelled first.
        """
        await self.notifier.cancel_all()
        self.state.clear()
        self.faults.clear()
        self.clock.reset()
        self.latency_ms = self.config.latency_ms
        if self.v3_keys is not None:
            self.v3_keys.reset()

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
