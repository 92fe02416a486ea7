"""What one simulator instance is: its merchant, its sense of time and its manners."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from app.config import Settings
from app.simulator.v3keys import V3Config


class SimulatorRefused(RuntimeError):
    """The simulator must never run beside real money: it refuses ``WXPAY_ENV=production``."""


# WeChat's notify retry intervals after a failed delivery (PROTOCOL.md §5): 15 retries, 24h4m.
NOTIFY_RETRY_SCHEDULE: tuple[float, ...] = (
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """One merchant and one mini-program, plus the knobs that make tests fast.

    ``time_factor`` scales every wait the simulator itself performs (notify retries, refund
    settlement); ``notify_timeout`` is how long a notify receiver may take to reply, in real
    seconds. Validity periods (codes, prepay ids) follow the simulator clock instead, which
    tests move forward through ``/_control/clock``.

    ``v3`` is the merchant's WeChat Pay v3 key material; with it the simulator serves the v3
    paths beside the v2 ones, for the same merchant and the same orders.
    """

    appid: str
    app_secret: str
    mch_id: str
    api_key: str
    production: bool = False
    time_factor: float = 1.0
    latency_ms: float = 0.0
    notify_timeout: float = 5.0
    refund_settle_seconds: float = 5.0
    notify_retry_schedule: tuple[float, ...] = field(default=NOTIFY_RETRY_SCHEDULE)
    v3: V3Config | None = None

    def __post_init__(self) -> None:
        if self.production:
            raise SimulatorRefused("the WeChat simulator refuses to run when WXPAY_ENV=production")
        if self.time_factor < 0 or self.latency_ms < 0 or self.notify_timeout <= 0:
            raise ValueError("time_factor and latency_ms must be >= 0, notify_timeout > 0")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> SimulatorConfig:
        """The merchant the service itself is configured for (the same ``WXPAY_*`` settings)."""
        config = cls(
            appid=settings.appid,
            app_secret=settings.app_secret.get_secret_value(),
            mch_id=settings.mch_id,
            api_key=settings.api_key.get_secret_value(),
            production=settings.is_production,
        )
        return replace(config, **overrides)  # type: ignore[arg-type]

    def scaled(self, seconds: float) -> float:
        """A WeChat wait of ``seconds``, as this instance really sleeps it."""
        return seconds * self.time_factor
