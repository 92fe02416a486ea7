"""Small helpers for statements that differ by backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite


def upsert(dialect_name: str, table: Table) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the engine's dialect (PostgreSQL, SQLite)."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for dialect {dialect_name!r}")
