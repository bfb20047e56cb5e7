"""The package map in the README holds in the code: which package may import which, one Triton admin
client, every NexusError in the `nexus.errors` package, modules a reader can hold in mind."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import nexus
from nexus.errors import NexusError

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "nexus"
FOUNDATION = {"nexus", "errors", "tensors", "names", "settings", "atomic", "hashing", "shipped", "machine"}
#: Each part of the tree -> the parts it may import (besides itself). The README's map says the same.
MAY_IMPORT = {
    "api": set(
        MAY_IMPORT_ANY := {
            "foundation",
            "storage",
            "registry",
            "serving",
            "release",
            "deploy",
            "loadtest",
            "tune",
            "quickstart",
            "cli",
        }
    ),
    "foundation": {"foundation"},
    "storage": {"foundation"},
    "registry": {"foundation", "storage"},
    "serving": {"foundation", "storage", "registry"},
    "release": {"foundation", "storage", "registry", "serving"},
    "deploy": {"foundation", "storage", "serving", "release"},
    "loadtest": {"foundation", "serving"},
    "tune": {"foundation", "registry", "serving", "loadtest"},
    "quickstart": {"foundation", "registry", "serving", "loadtest"},
    "cli": MAY_IMPORT_ANY - {"cli"},
}


def part(module: str) -> str:
    """`nexus.serving.admin` -> `serving`; the top-level modules are the foundation, `nexus` itself the API."""
    parts = module.split(".")
    if module in ("nexus", "nexus.__main__"):
        return "api"
    if module.startswith("nexus.errors"):
        return "foundation"
    return "foundation" if len(parts) < 3 and parts[-1] in FOUNDATION | {"__init__"} else parts[1]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_shipped" not in p.parts)


def dotted(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def nexus_imports(path: Path) -> set[str]:
    """Every `nexus...` module ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nexus"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if (PACKAGE / a.name).exists())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nexus"))
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_what_the_package_map_allows(path: Path) -> None:
    here = part(dotted(path))
    allowed = MAY_IMPORT[here] | {here}
    wrong = sorted(m for m in nexus_imports(path) if m != "nexus" and part(m) not in allowed)
    assert not wrong, f"{here} may import {sorted(allowed)}, but {path.name} imports {wrong}"


def strings(path: Path) -> list[str]:
    """The string literals in ``path``'s code (f-strings' text parts too), docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and node.body
        and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_only_the_admin_client_speaks_tritons_admin_api() -> None:
    admin = re.compile(r"^/v2$|/v2/(health|repository)|^/stats$|/stats$|/(config|ready)$")
    speakers = sorted(
        str(p.relative_to(ROOT))
        for p in [*modules(), *(ROOT / "benchmarks").glob("*.py")]
        if any(admin.search(text) for text in strings(p))
    )
    assert speakers == ["nexus/serving/admin.py"]


def test_every_nexus_error_lives_in_nexus_errors_and_none_is_raised_bare() -> None:
    for info in pkgutil.walk_packages(nexus.__path__, "nexus."):
        if info.name.endswith(("__main__", "train_digits")):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, NexusError):
                where = value.__module__
                assert where.startswith("nexus.errors"), f"{info.name}.{name} is defined in {where}"
    bare = [str(p.relative_to(ROOT)) for p in modules() if "raise NexusError(" in p.read_text(encoding="utf-8")]
    assert bare == []


def test_every_module_stays_under_300_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in modules() if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
