"""The package's layers (../shared/DESIGN.md, "Layers"): every import points down, never up or sideways."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "oomguard"

#: Bottom to top. A module may import its own package and anything in a lower layer, nothing else.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "units", "codes", "oom_text", "atomic", "environment"}),
    frozenset({"events", "rundir", "config"}),
    frozenset({"host"}),
    frozenset({"devices"}),
    frozenset({"memory"}),
    frozenset({"checkpoint", "data", "models", "distributed"}),
    frozenset({"engine", "tasks"}),
    frozenset({"loop"}),
    frozenset({"report", "diagnose"}),
    frozenset({"integrations"}),
    frozenset({"supervise"}),
    frozenset({"cli"}),
    frozenset({"__init__", "__main__"}),  # the public API's lazy names, ``python -m oomguard``
)


def layer_of(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"oomguard.{unit} is in no layer: add it to LAYERS and to DESIGN.md")


def unit_of(path: Path) -> str:
    """The package (or top-level module) a source file belongs to: ``loop``, ``errors``, ``__init__``."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def imported_units(path: Path) -> set[str]:
    """Units of oomguard that ``path`` imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "oomguard" else [f"oomguard.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "oomguard" and len(parts) > 1:
                found.add(parts[1])
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    own = unit_of(path)
    upward = sorted(unit for unit in imported_units(path)
                    if unit != own and layer_of(unit) >= layer_of(own))
    where = path.relative_to(PACKAGE)
    assert not upward, f"{where} ({own}) imports from the same or a higher layer: {upward}"


def test_no_second_trainer_beside_the_loop() -> None:
    assert not list(PACKAGE.glob("detect*.py")), "detection lives in integrations/ultralytics/"


def test_the_command_line_dispatches_training_in_a_few_lines() -> None:
    lines = (PACKAGE / "cli" / "train.py").read_text().splitlines()
    assert len(lines) <= 100


def test_the_supervisor_and_the_report_start_without_torch() -> None:
    code = ("import sys, oomguard.supervise.train, oomguard.supervise.run, oomguard.report, "
            "oomguard.cli.main; print(sorted(m for m in ('torch', 'oomguard.loop', 'oomguard.engine') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
