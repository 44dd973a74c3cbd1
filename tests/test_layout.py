"""The import rules of docs/architecture.md hold: imports point one way, between packages and inside gateway."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> the gateway packages and top-level modules it must not import (docs/architecture.md)
FORBIDDEN = {
    "gateway.http": ("gateway.api", "gateway.relay", "gateway.ledger", "gateway.state", "gateway.context",
                     "gateway.errors", "gateway.app", "gateway.logs", "providers", "config"),
    "gateway.ledger": ("gateway.api", "gateway.relay", "gateway.http", "gateway.state", "gateway.context"),
    "gateway.relay": ("gateway.api", "gateway.app", "gateway.server", "gateway.ops"),
    "gateway.ops": ("gateway.app", "gateway.server"),
    "gateway.billing": ("gateway.api", "gateway.relay", "gateway.tasks", "gateway.app", "gateway.server", "gateway.context"),
    "gateway.tasks": ("gateway.api", "gateway.app", "gateway.server", "gateway.context"),
    "providers": ("gateway",),
    "config": ("gateway", "providers"),
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for top in ("gateway", "providers", "config"):
        for path in sorted((ROOT / top).rglob("*.py")):
            out.append((".".join(path.relative_to(ROOT).with_suffix("").parts), path))
    return out


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_imports_point_one_way(module, path):
    for package, forbidden in FORBIDDEN.items():
        if module == package or module.startswith(package + "."):
            bad = sorted(i for i in _imports(path) for f in forbidden if i == f or i.startswith(f + "."))
            assert not bad, f"{module} imports {bad}, which docs/architecture.md rules out for {package}"
