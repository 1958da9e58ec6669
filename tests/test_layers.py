"""The house's layering rule, checked on the source: imports point down only (web → stream → directions → engine).

The rule reads directories: every module under a layer's folder (sub-packages included) may import its own layer
and the layers below it. Only entry points -- files named ``__main__.py`` -- may compose an upper package with a
lower one (DESIGN.md); there is no list of exempt file names.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["engine", "directions", "stream", "web"]          # bottom → top
ENTRY_POINT = "__main__.py"


def _imported_top_packages(path: Path) -> set[str]:
    """Top-level package names imported anywhere in a module (absolute and relative imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif node.level >= 2:
                names.add("<parent-relative>")
    return names


def _library_modules(package: str):
    for path in sorted((REPO / package).rglob("*.py")):
        if path.name != ENTRY_POINT:
            yield path


@pytest.mark.parametrize("package", LAYERS)
def test_imports_point_down_only(package):
    allowed_below = set(LAYERS[: LAYERS.index(package) + 1])
    forbidden = set(LAYERS) - allowed_below
    offenders = []
    for path in _library_modules(package):
        bad = _imported_top_packages(path) & (forbidden | {"<parent-relative>"})
        if bad:
            offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not offenders, "layering violated (imports must point down only):\n" + "\n".join(offenders)


def test_every_layer_has_code():
    for package in LAYERS:
        modules = [p for p in (REPO / package).glob("*.py") if p.name != "__init__.py"]
        assert modules, f"{package}/ holds no modules"


def test_importing_packages_is_light():
    """Nothing heavy at import time: importing the packages must not pull torch, cv2 or mediapipe in."""
    code = (
        "import sys, engine, directions, stream, web\n"
        "heavy = [m for m in ('torch', 'cv2', 'mediapipe', 'open_clip', 'aiortc', 'gradio') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"package import pulled in heavy modules: {out.stdout.strip()}"
