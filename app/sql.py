"""Run a statement written once in SQLAlchemy Core on either driver.

Repositories write every statement once, in Core: its columns are typed and checked against the
models. On PostgreSQL the statement is compiled once per process into asyncpg's ``$n`` text and
the order of its parameters, and runs on asyncpg directly: measured here, SQLAlchemy's async
layer costs about twice the client CPU of the same SQL on asyncpg (docs/benchmarks.md). On
SQLite it runs through SQLAlchemy. Repositories only see ``Executor``.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler

Params = Mapping[str, Any]


class Row(Protocol):
    """A result row by position: asyncpg's ``Record`` or SQLAlchemy's ``Row``."""

    def __getitem__(self, index: int, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


Processor = Callable[[Any], Any]


class UniqueViolation(Exception):
    """A unique constraint refused the statement; ``constraint`` names it where the driver says."""

    def __init__(self, constraint: str | None) -> None:
        super().__init__(constraint or "unique constraint")
        self.constraint = constraint


class Executor(Protocol):
    """One connection, as repositories see it: Core statements in, plain rows out."""

    @property
    def dialect(self) -> str: ...

    async def fetch(self, stmt: ClauseElement, params: Params | None = None) -> list[Row]: ...

    async def fetchrow(self, stmt: ClauseElement, params: Params | None = None) -> Row | None: ...

    async def scalar(self, stmt: ClauseElement, params: Params | None = None) -> Any: ...

    async def execute(self, stmt: ClauseElement, params: Params | None = None) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        ...


_NO_PARAMS: Params = {}


class SqlAlchemyExecutor:
    """``Executor`` on a SQLAlchemy connection (SQLite; any SQLAlchemy backend)."""

    __slots__ = ("_conn", "dialect")

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self.dialect: str = conn.dialect.name

    async def fetch(self, stmt: ClauseElement, params: Params | None = None) -> list[Row]:
        return list((await self._run(stmt, params)).all())

    async def fetchrow(self, stmt: ClauseElement, params: Params | None = None) -> Row | None:
        row: Row | None = (await self._run(stmt, params)).first()
        return row

    async def scalar(self, stmt: ClauseElement, params: Params | None = None) -> Any:
        return (await self._run(stmt, params)).scalar()

    async def execute(self, stmt: ClauseElement, params: Params | None = None) -> int:
        return int((await self._run(stmt, params)).rowcount or 0)

    async def _run(self, stmt: ClauseElement, params: Params | None) -> Any:
        try:
            return await self._conn.execute(stmt, dict(params or _NO_PARAMS))  # type: ignore[call-overload]
        except IntegrityError as exc:
            if _sqlalchemy_unique_violation(exc):
                raise UniqueViolation(None) from exc
            raise


def _sqlalchemy_unique_violation(exc: IntegrityError) -> bool:
    # PostgreSQL's SQLSTATE through asyncpg, SQLite's extended code through sqlite3.
    return (
        getattr(exc.orig, "sqlstate", None) == "23505"
        or getattr(exc.orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_UNIQUE"
    )


class _Required:
    """A parameter the caller must give."""


class _ColumnDefault:
    """A Python-side column default, computed per execution as SQLAlchemy would."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[Any], Any]) -> None:
        self.make = make


_REQUIRED = _Required()


@dataclass(frozen=True, slots=True)
class PgStatement:
    """A Core statement compiled for asyncpg: the SQL text, and how to build its arguments."""

    sql: str
    # (parameter name, value when the caller gives none, bind processor), in ``$n`` order.
    slots: tuple[tuple[str, Any, Processor | None], ...]
    # One processor a result column, or None when no column needs one (the usual case).
    results: tuple[Processor | None, ...] | None
    returns_rows: bool

    def arguments(self, params: Params) -> list[Any]:
        args = []
        for name, fallback, process in self.slots:
            value = params.get(name, fallback)
            if value.__class__ is _Required:
                raise KeyError(f"no value for SQL parameter {name!r}")
            if value.__class__ is _ColumnDefault:
                value = value.make(None)
            args.append(value if process is None else process(value))
        return args

    def row(self, record: Row) -> Row:
        if self.results is None:
            return record
        return tuple(v if p is None else p(v) for v, p in zip(record, self.results, strict=True))


_PG_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


def compile_for_asyncpg(stmt: ClauseElement, dialect: Dialect = _PG_DIALECT) -> PgStatement:
    """``stmt`` as asyncpg runs it. Constant ``IN`` lists (our own enum values) are expanded
    here, once; a caller-given list would need a compile per call and is refused."""
    compiled = stmt.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    params: Params = compiled.construct_params(_check=False)
    sql, names = compiled.string, tuple(compiled.positiontup or ())
    if compiled.post_compile_params:
        for bind in compiled.post_compile_params:
            if bind.value is None or bind.callable is not None:
                raise ValueError(f"{bind.key!r}: only constant IN lists are compiled once")
        expanded = compiled._process_parameters_for_postcompile(dict(params))
        sql, names, params = (
            expanded.statement,
            tuple(expanded.positiontup or ()),
            expanded.parameters,
        )
    return PgStatement(
        sql=sql,
        slots=tuple(_slot(compiled, dialect, name, params) for name in names),
        results=_result_processors(compiled, dialect),
        returns_rows=bool(compiled._result_columns),
    )


def _slot(
    compiled: SQLCompiler, dialect: Dialect, name: str, params: Params
) -> tuple[str, Any, Processor | None]:
    bind = compiled.binds.get(name)
    process = None if bind is None else bind.type._cached_bind_processor(dialect)
    defaults = {col.key: col for col in (*compiled.insert_prefetch, *compiled.update_prefetch)}
    if name in defaults:
        default = defaults[name].default
        assert default is not None
        if default.is_scalar:
            return name, default.arg, process  # type: ignore[attr-defined]
        return name, _ColumnDefault(default.arg), process  # type: ignore[attr-defined]
    if bind is None:  # an element of an expanded constant IN list
        return name, params[name], None
    return name, _REQUIRED if bind.required else params.get(name), process


def _result_processors(
    compiled: SQLCompiler, dialect: Dialect
) -> tuple[Processor | None, ...] | None:
    found = tuple(
        column.type._cached_result_processor(dialect, None) for column in compiled._result_columns
    )
    return found if any(p is not None for p in found) else None


class StatementCache:
    """Each statement compiled once per process. Statements are built once, at import, and
    ``warm`` compiles those at start-up; a few are built on first use from a small set of
    variants (cached where they are built) and compiled then, once; one built per call is
    compiled per call, and forgotten with it (weak keys)."""

    def __init__(self) -> None:
        self._compiled: weakref.WeakKeyDictionary[ClauseElement, PgStatement] = (
            weakref.WeakKeyDictionary()
        )

    def warm(self, modules: Iterable[ModuleType]) -> int:
        """Compile every statement the ``modules`` hold at module level (alone, or as the
        PostgreSQL entry of a per-dialect dict), so no request pays for it; how many."""
        found = [stmt for module in modules for stmt in _module_statements(module)]
        for stmt in found:
            self[stmt]
        return len(found)

    def __contains__(self, stmt: ClauseElement) -> bool:
        return stmt in self._compiled

    def __len__(self) -> int:
        return len(self._compiled)

    def __getitem__(self, stmt: ClauseElement) -> PgStatement:
        found = self._compiled.get(stmt)
        if found is None:
            found = self._compiled[stmt] = compile_for_asyncpg(stmt)
        return found


def _module_statements(module: ModuleType) -> Iterator[ClauseElement]:
    for value in vars(module).values():
        if isinstance(value, dict):
            value = value.get("postgresql")
        # Executable: statements, not the columns and expressions they are built from.
        if isinstance(value, Executable) and isinstance(value, ClauseElement):
            yield value


# A string: asyncpg's classes are generic only to type checkers.
PgConnection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


class AsyncpgExecutor:
    """``Executor`` on a pooled asyncpg connection (PostgreSQL)."""

    __slots__ = ("_cache", "_conn")
    dialect = "postgresql"

    def __init__(self, conn: PgConnection, cache: StatementCache) -> None:
        self._conn = conn
        self._cache = cache

    async def fetch(self, stmt: ClauseElement, params: Params | None = None) -> list[Row]:
        compiled, records = await self._run(self._conn.fetch, stmt, params)
        if compiled.results is None:
            return list(records)
        return [compiled.row(record) for record in records]

    async def fetchrow(self, stmt: ClauseElement, params: Params | None = None) -> Row | None:
        compiled, record = await self._run(self._conn.fetchrow, stmt, params)
        return None if record is None else compiled.row(record)

    async def scalar(self, stmt: ClauseElement, params: Params | None = None) -> Any:
        row = await self.fetchrow(stmt, params)
        return None if row is None else row[0]

    async def execute(self, stmt: ClauseElement, params: Params | None = None) -> int:
        if self._cache[stmt].returns_rows:
            return len(await self.fetch(stmt, params))
        _, status = await self._run(self._conn.execute, stmt, params)
        # "UPDATE 3", "DELETE 0", "INSERT 0 1": the count is the last word.
        return int(status.rsplit(" ", 1)[-1])

    async def _run(
        self, method: Callable[..., Awaitable[Any]], stmt: ClauseElement, params: Params | None
    ) -> tuple[PgStatement, Any]:
        compiled = self._cache[stmt]
        args = compiled.arguments(params or _NO_PARAMS)
        try:
            return compiled, await method(compiled.sql, *args)
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(exc.constraint_name) from exc
