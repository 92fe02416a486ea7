"""Command line: ``python -m app.cli products add|list|disable``, ``seed-demo``, ``sweep``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from app.config import Settings, get_settings
from app.db import create_engine, create_sessionmaker
from app.errors import AppError
from app.httpclient import build_http_client
from app.orders.sweeper import sweep_once
from app.payments.service import PaymentService, sqlalchemy_transaction
from app.products.service import ProductService
from app.wechat.client import WeChatPayClient


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
    return parser


async def _products(args: argparse.Namespace, settings: Settings) -> str:
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            service = ProductService(session)
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
    finally:
        await engine.dispose()


async def _seed_demo(settings: Settings) -> str:
    if settings.is_production:
        return "seed-demo does nothing in production"
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            added = await ProductService(session).seed_demo()
    finally:
        await engine.dispose()
    return f"added {added} demo products" if added else "catalogue not empty; nothing added"


async def _sweep(settings: Settings) -> str:
    engine = create_engine(settings.database_url)
    http = build_http_client(settings)
    try:
        pay = WeChatPayClient.from_settings(settings, http)
        payments = PaymentService(sqlalchemy_transaction(engine))
        report = await sweep_once(engine, settings, pay, payments)
    finally:
        await http.aclose()
        await engine.dispose()
    return (
        f"claimed {report.claimed}, paid {report.paid}, "
        f"closed {report.closed}, failed {report.failed}"
    )


async def run(argv: Sequence[str]) -> str:
    args = _parser().parse_args(argv)
    settings = get_settings()
    if args.command == "products":
        return await _products(args, settings)
    if args.command == "seed-demo":
        return await _seed_demo(settings)
    return await _sweep(settings)


def main() -> None:
    try:
        print(asyncio.run(run(sys.argv[1:])))
    except AppError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
