"""Project rules that a reviewer would otherwise check by hand: lint, and imports running one way."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "glide_api"
# The data path is server -> engine -> pipeline -> diffusion, models: lower layers never import upward.
LOWER_LAYERS = ("diffusion", "models")
FORBIDDEN_IN_LOWER = (
    "flask",
    "apiflask",
    "werkzeug",
    "glide_api.server",
    "glide_api.engine",
    "glide_api.pipeline",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            else:
                names.add(node.module or "")
    return names


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_networks_and_diffusion_never_import_the_web_or_engine_layers(layer) -> None:
    for path in (PACKAGE / layer).rglob("*.py"):
        for name in imported_modules(path):
            assert not name.startswith(FORBIDDEN_IN_LOWER), f"{path.relative_to(ROOT)} imports {name}"


def test_diffusion_maths_does_not_depend_on_the_networks() -> None:
    for path in (PACKAGE / "diffusion").rglob("*.py"):
        assert not any(n.startswith("glide_api.models") for n in imported_modules(path)), path


def test_importing_the_package_has_no_side_effects_on_the_cache(tmp_path) -> None:
    code = (
        "import os, glide_api, glide_api.models.resolve, glide_api.download; "
        "assert not os.listdir(os.environ['GLIDE_API_CACHE_PARENT'])"
    )
    env = {
        "GLIDE_API_CACHE": str(tmp_path / "cache"),
        "GLIDE_API_CACHE_PARENT": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e .[dev])")
def test_ruff_finds_nothing() -> None:
    result = subprocess.run(
        ["ruff", "check", "--no-cache", "glide_api", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
