"""Command line: ``python -m app.cli products add|list|disable``, ``seed-demo``, ``sweep``,
``doctor``, ``deliver-webhooks``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack

from pydantic import ValidationError

from app.config import Settings, get_settings
from app.doctor import Finding, diagnose, report
from app.errors import AppError
from app.logging_setup import configure_logging
from app.runtime import Runtime, build_runtime, with_dev_v3_keys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    products = commands.add_parser("products", help="manage the catalogue")
    actions = products.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a product")
    add.add_argument("--name", required=True)
    add.add_argument("--description", required=True, help="unified-order body, ≤ 127 chars")
    add.add_argument("--price-fen", type=int, required=True)
    actions.add_parser("list", help="list every product")
    disable = actions.add_parser("disable", help="stop selling a product")
    disable.add_argument("product_id", type=int)
    commands.add_parser("seed-demo", help="add demo products to an empty dev catalogue")
    commands.add_parser("sweep", help="reconcile and expire unpaid orders once")
    commands.add_parser(
        "doctor",
        help="check configuration, database, WeChat, keys and notify URLs; exit 1 if any fails",
    )
    commands.add_parser("deliver-webhooks", help="send every webhook delivery due now")
    return parser


async def _products(args: argparse.Namespace, runtime: Runtime) -> str:
    service = runtime.products
    if args.action == "add":
        product = await service.add_product(args.name, args.description, args.price_fen)
        return f"added product {product.id}"
    if args.action == "disable":
        product = await service.set_active(args.product_id, False)
        return f"disabled product {product.id}"
    rows = await service.list_products(include_inactive=True)
    return "\n".join(
        f"{p.id}\t{p.price_fen}\t{'on' if p.active else 'off'}\t{p.name}\t{p.description}"
        for p in rows
    )


async def _seed_demo(runtime: Runtime) -> str:
    if runtime.settings.is_production:
        return "seed-demo does nothing in production"
    added = await runtime.products.seed_demo()
    return f"added {added} demo products" if added else "catalogue not empty; nothing added"


async def _sweep(runtime: Runtime) -> str:
    report = await runtime.sweeper.sweep_once()
    return (
        f"claimed {report.claimed}, paid {report.paid}, "
        f"closed {report.closed}, failed {report.failed}"
    )


async def _deliver_due(runtime: Runtime) -> int:
    """Pass after pass until nothing is due: a failed attempt is due again only after its
    backoff, so this ends."""
    made = 0
    while sent := await runtime.deliveries.deliver_once():
        made += sent
    return made


async def run(argv: Sequence[str], settings: Settings | None = None) -> str:
    """Run one command on the service as the server builds it (the same composition root)."""
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        return (await doctor(settings))[0]
    async with AsyncExitStack() as stack:
        # The dev keys the server uses, so a dev sweep on v3 talks to the server's /sim mount.
        settings, _ = with_dev_v3_keys(settings or get_settings())
        runtime = await build_runtime(settings, stack)
        if args.command == "products":
            return await _products(args, runtime)
        if args.command == "seed-demo":
            return await _seed_demo(runtime)
        if args.command == "deliver-webhooks":
            return f"{await _deliver_due(runtime)} webhook attempts made"
        return await _sweep(runtime)


async def doctor(settings: Settings | None = None) -> tuple[str, bool]:
    """The doctor's report, and whether everything holds (see ``app.doctor``)."""
    try:
        settings, _ = with_dev_v3_keys(settings or get_settings())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return report([Finding("configuration", False, f"cannot be read: {problems}")])
    return report(await diagnose(settings))


def _logged_settings() -> Settings | None:
    """The settings, logging configured from them as the server's lifespan does: a sweep or a
    delivery run logs WeChat's answers, so its lines need the same redaction (and JSON, when
    asked for). None when they cannot be read: ``doctor`` reports that, the others fail on it."""
    try:
        # The dev v3 keys too: generated, they are secrets the redaction must know.
        settings, _ = with_dev_v3_keys(get_settings())
    except ValidationError:
        return None
    configure_logging(settings)
    return settings


def main() -> None:
    settings = _logged_settings()
    if sys.argv[1:] == ["doctor"]:
        text, healthy = asyncio.run(doctor(settings))
        print(text)
        raise SystemExit(0 if healthy else 1)
    try:
        print(asyncio.run(run(sys.argv[1:], settings)))
    except AppError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
