"""The shape of the code, checked: domain packages do not import each other in cycles, and the
payment code reaches WeChat only through the payment-gateway port (../shared/STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
DOMAINS = ("auth", "events", "orders", "payments", "products", "ratelimits", "refunds")
# Code that talks about payments and refunds: only the port and our own types, never the
# protocol package (its wire models, codes and clients belong to the adapters).
BEHIND_THE_PORT = ("orders", "payments", "refunds", "sweep.py", "inbound.py", "gateway.py")


def imported_modules(path: Path) -> set[str]:
    """Every ``app.…`` module a file imports, type-checking imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "app" or name.startswith("app.")}


def domain_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {domain: set() for domain in DOMAINS}
    for domain in DOMAINS:
        for path in (APP / domain).glob("*.py"):
            for module in imported_modules(path):
                parts = module.split(".")
                if len(parts) > 1 and parts[1] in DOMAINS and parts[1] != domain:
                    graph[domain].add(parts[1])
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found = []

    def visit(node: str, path: list[str]) -> None:
        for follower in sorted(graph[node]):
            if follower == path[0]:
                found.append([*path, follower])
            elif follower not in path and follower > path[0]:
                visit(follower, [*path, follower])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_domain_packages_import_each_other_without_cycles() -> None:
    graph = domain_graph()

    assert cycles(graph) == []
    # The check sees real edges (a broken parser would find no cycles in an empty graph).
    assert {"orders"} <= graph["payments"] and {"orders"} <= graph["refunds"]
    # Events are written by the packages whose changes they report; the events package
    # stores and sends them, rendered through what the composition root hands it.
    assert {"events"} <= graph["orders"] and graph["events"] == set()


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_payment_code_reaches_wechat_only_through_the_port() -> None:
    leaks = {
        f"{path.relative_to(APP)}: {module}"
        for name in BEHIND_THE_PORT
        for path in ([APP / name] if name.endswith(".py") else (APP / name).glob("*.py"))
        for module in imported_modules(path)
        if module.startswith("app.wechat")
    }
    # The port re-exports the error split and WeChat's limits as its own vocabulary.
    assert leaks == {
        "gateway.py: app.wechat.errors",
        "gateway.py: app.wechat.models",
        "gateway.py: app.wechat.xmlcodec",
    }


def test_every_class_name_in_app_has_one_meaning() -> None:
    """Two classes of one name in two layers (a stored refund status and WeChat's) read alike
    and mean different things; each name is used once."""
    seen: dict[str, list[str]] = {}
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(str(path.relative_to(APP)))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
    assert len(seen) > 50  # the walk did find the classes


def test_the_protocol_package_imports_neither_the_port_nor_a_domain() -> None:
    # app.wechat is the library the adapters (app.adapters) use: were it to import the port or
    # a domain package, the port, which names WeChat's errors and limits, would close a loop.
    reached = {
        f"{path.relative_to(APP)}: {module}"
        for path in (APP / "wechat").glob("*.py")
        for module in imported_modules(path)
        if set(module.split(".")[1:2]) & {*DOMAINS, "gateway", "adapters"}
    }

    assert reached == set()
    assert "app.gateway" in imported_modules(APP / "adapters" / "wechatpay_v2.py")


# Names every module may define for itself: each means the same thing wherever it is.
CONVENTIONAL = {"logger", "router", "admin_router", "main", "T"}
# Each state machine's own table of moves and its inverse: one role, one per machine.
PER_STATE_MACHINE = {"ALLOWED_MOVES": 2, "sources_of": 2}


def test_every_public_module_level_name_has_one_meaning() -> None:
    """Functions, classes and constants too: ``rfc3339`` that parsed in one module and
    formatted in another, or two ``sign`` for two signing schemes, read alike and differ."""
    seen: dict[str, list[str]] = {}
    for path in APP.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            for name in _defined_names(node):
                if not name.startswith("_") and name not in CONVENTIONAL:
                    seen.setdefault(name, []).append(str(path.relative_to(APP)))
    repeated = {name: len(where) for name, where in seen.items() if len(where) > 1}

    assert repeated == PER_STATE_MACHINE, {n: seen[n] for n in repeated}
    assert len(seen) > 300  # the walk did find the module-level names


def _defined_names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [target.id for target in node.targets if isinstance(target, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []
