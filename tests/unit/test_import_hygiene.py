"""Headless modules never pull in the UI or the heavy ML stack (harlequin's test_import_hygiene pattern).

Each headless module (spark_tui, spark_tui.cli, spark_tui.errors, every spark_tui.core.* and every
spark_tui.commands.* except tui) is imported in a fresh interpreter, which then reports whether textual,
torch or vllm ended up in sys.modules. The CLI fast paths run as real `python -X importtime -m spark_tui`
processes and their import log is checked the same way. Modules are discovered from the tree, so new
ones are covered without editing this file. The layers are checked from the source (lazy imports too): ui/ never
imports commands/, and core/ imports neither of them nor textual.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "spark_tui"
BANNED = ("textual", "torch", "vllm")
UI_ONLY_COMMANDS = {"tui"}  # the TUI entry point may import textual


def headless_modules() -> list[str]:
    mods = ["spark_tui", "spark_tui.cli", "spark_tui.errors", "spark_tui.__main__"]
    for sub, skip in (("core", set()), ("commands", UI_ONLY_COMMANDS)):
        mods.append(f"spark_tui.{sub}")
        for info in pkgutil.walk_packages([str(PKG / sub)], prefix=f"spark_tui.{sub}."):  # core's sub-packages too
            if info.name.rsplit(".", 1)[1] not in skip:
                mods.append(info.name)
    return [m for m in mods if m != "spark_tui.__main__"]  # __main__ runs the CLI: covered below


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_discovery_finds_the_known_modules():
    mods = headless_modules()
    for m in ("spark_tui.cli", "spark_tui.core.hardware.probe", "spark_tui.core.hardware.nvml", "spark_tui.commands.probe",
              "spark_tui.core.planning.planner", "spark_tui.core.export.formats", "spark_tui.core.runtime.supervisor"):
        assert m in mods
    assert "spark_tui.commands.tui" not in mods


@pytest.mark.parametrize("module", headless_modules())
def test_headless_module_imports_no_ui_or_ml(module):
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted(m for m in {BANNED!r} if m in sys.modules)))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [], f"{module} imports {p.stdout.strip()}"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside a function (lazy imports included), plus any string
    naming a spark_tui module (importlib.import_module, `python -m` argv)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("spark_tui."):
            names.add(node.value)
    return names


LAYERS = [  # (package, what it must never import): the UI and the CLI are two front ends over one core
    ("ui", ("spark_tui.commands",)),
    ("core", ("spark_tui.commands", "spark_tui.ui", "textual")),
]


@pytest.mark.parametrize("layer,banned", LAYERS, ids=[x[0] for x in LAYERS])
def test_layers_never_import_across(layer, banned):
    bad = []
    for f in sorted((PKG / layer).rglob("*.py")):
        for name in sorted(_imports(f)):
            if any(name == b or name.startswith(b + ".") for b in banned):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_layer_check_sees_a_lazy_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from spark_tui.commands.export import _targets\n")
    assert "spark_tui.commands.export" in _imports(f)


def _imported_top_level(importtime_stderr: str) -> set[str]:
    """Top-level package names from `python -X importtime` ('import time: self | cumulative | name')."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name.split(".")[0])
    return names


FAST_PATHS = [["--help"], ["plan", "--help"], ["probe", "--help"], ["probe", "--json"]]
if (PKG / "commands" / "plan.py").exists():  # the plan command lives on its own branch until merged
    FAST_PATHS.append(["plan", "--json"])


@pytest.mark.parametrize("argv", FAST_PATHS, ids=" ".join)
def test_cli_fast_path_imports_no_ui_or_ml(argv):
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "spark_tui", *argv], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
    imported = _imported_top_level(p.stderr)
    assert "spark_tui" in imported, "the import log was not captured"
    assert "Traceback" not in p.stderr
    assert imported.isdisjoint(BANNED), f"`spark-tui {' '.join(argv)}` imports {sorted(imported & set(BANNED))}"


def test_importtime_parser_sees_a_banned_import():
    # the check above can fail: importing textual shows up in the same log format
    if importlib.util.find_spec("textual") is None:
        pytest.skip("textual not installed")
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", "import textual"], capture_output=True,
                       text=True, timeout=120)
    assert "textual" in _imported_top_level(p.stderr)
