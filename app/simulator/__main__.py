"""``python -m app.simulator --port 9100``: a standalone local WeChat."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from app.config import get_settings
from app.simulator.config import SimulatorConfig, SimulatorRefused
from app.simulator.core import create_simulator_app


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--time-factor", type=float, default=1.0, help="scales notify retries")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="on WeChat endpoints")
    parser.add_argument("--notify-timeout", type=float, default=5.0, help="seconds per reply")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = SimulatorConfig.from_settings(
            get_settings(),
            time_factor=args.time_factor,
            latency_ms=args.latency_ms,
            notify_timeout=args.notify_timeout,
        )
    except SimulatorRefused as refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    uvicorn.run(create_simulator_app(config), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
