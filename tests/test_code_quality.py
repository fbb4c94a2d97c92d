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

# The import layers, lowest first: a module may import its own layer and those below it, never one
# above. The data path is server -> engine -> pipeline -> diffusion, models; beside it, training
# builds on the pipeline, the client and webhooks on the shared vocabulary alone, and the command line
# on anything.
# Modules directly in glide_api/ (errors, checks, options, progress, model_selection, config, ...)
# and glide_api/demo are the foundation every layer shares.
FOUNDATION = "foundation"
LAYERS: dict[str, int] = {
    FOUNDATION: 0,
    "client": 1,
    "diffusion": 1,
    "models": 1,
    "webhooks": 1,
    "pipeline": 2,
    "engine": 3,
    "training": 3,
    "server": 4,
    "cli": 5,
}
# Peers that must not import each other either way.
STRANGERS = {frozenset({"diffusion", "models"}), frozenset({"engine", "training"})}
# What the server may take from below the engine (docs/architecture.md says why): the plain-data
# request, the PNG helpers, the respacing parser, the pipeline type it builds at start-up, and the
# weights registry and cache (to name missing files). Never the networks or the sampling maths.
SERVER_BELOW_ENGINE = (
    "glide_api.pipeline.params",
    "glide_api.pipeline.images",
    "glide_api.pipeline.glide_pipeline",
    "glide_api.diffusion.schedule",
    "glide_api.models.registry",
    "glide_api.models.weights_source",
    "glide_api.models.official_files",
)
WEB = ("flask", "apiflask", "werkzeug")
NO_WEB = ("diffusion", "models", "pipeline", "engine", "training", "client", "webhooks", FOUNDATION)


def layer_of(module: str) -> str:
    """The layer of a glide_api module ("glide_api.server.v1" -> "server")."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else FOUNDATION


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = sorted(PACKAGE.rglob("*.py"))


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
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from ..pipeline import images` imports the module glide_api.pipeline.images.
            folder = ROOT.joinpath(*module.split("."))
            for alias in node.names:
                is_module = (folder / f"{alias.name}.py").is_file() or (folder / alias.name).is_dir()
                names.add(f"{module}.{alias.name}" if is_module else module)
    return names


def layer_violations(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported`, or None if it may."""
    here, there = layer_of(importer), layer_of(imported)
    if not imported.startswith("glide_api"):
        return (
            f"{here} never imports the web framework" if here in NO_WEB and imported.startswith(WEB) else None
        )
    if imported == "glide_api" or importer == "glide_api" or there == here:
        return None  # the package's lazy public surface, and a layer's own modules
    if frozenset({here, there}) in STRANGERS:
        return f"{here} and {there} stay apart"
    if LAYERS[there] > LAYERS[here] or (LAYERS[there] == LAYERS[here] and there != FOUNDATION):
        return f"{here} is below {there}"
    if here == "server" and there in ("pipeline", "diffusion", "models"):
        return (
            None
            if imported.startswith(SERVER_BELOW_ENGINE)
            else "the server's rule for what lies below the engine"
        )
    if here in ("client", "webhooks") and there != FOUNDATION:
        return f"{here} uses the shared vocabulary only"
    return None


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_imports_only_its_own_layer_or_lower_ones(path: Path) -> None:
    importer = module_name(path)
    broken = [(name, why) for name in imported_modules(path) if (why := layer_violations(importer, name))]
    assert not broken, f"{importer}: " + "; ".join(f"imports {name} ({why})" for name, why in broken)


def test_the_layer_check_refuses_upward_and_sideways_imports() -> None:
    assert (
        layer_violations("glide_api.pipeline.params", "glide_api.engine.jobs") == "pipeline is below engine"
    )
    assert layer_violations("glide_api.models.glide", "glide_api.diffusion.schedule") is not None
    assert layer_violations("glide_api.errors", "glide_api.pipeline.params") is not None
    assert layer_violations("glide_api.server.v1", "glide_api.models.glide") is not None
    assert layer_violations("glide_api.client.types", "glide_api.pipeline.params") is not None
    assert layer_violations("glide_api.webhooks.sender", "glide_api.engine.jobs") is not None
    assert layer_violations("glide_api.engine.store", "flask") is not None
    assert layer_violations("glide_api.server.v1", "glide_api.engine") is None
    assert layer_violations("glide_api.cli.serve", "glide_api.server") is None


def test_the_layer_table_covers_every_package() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages - {"demo"} <= set(LAYERS), packages - set(LAYERS)


def raised_names(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, the raised name, the innermost enclosing function) of every `raise Name(...)`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    enclosing: dict[int, str] = {}
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(function):  # nested functions come later in the walk, and win
            enclosing[id(node)] = function.name
    found = []
    for node in ast.walk(tree):
        exc = node.exc if isinstance(node, ast.Raise) else None
        target = exc.func if isinstance(exc, ast.Call) else exc
        if isinstance(target, ast.Name):
            found.append((node.lineno, target.id, enclosing.get(id(node))))
    return found


def test_every_exception_the_package_raises_derives_from_its_base_error() -> None:
    import builtins

    import glide_api.client
    import glide_api.errors

    ours = {**vars(glide_api.errors), **vars(glide_api.client)}
    for path in MODULES:
        for line, name, function in raised_names(path):
            if name == "AttributeError" and function == "__getattr__":
                continue  # the language's protocol for a module's lazy attributes
            kind = ours.get(name, getattr(builtins, name, None))
            if isinstance(kind, type) and issubclass(kind, BaseException):
                where = f"{path.relative_to(ROOT)}:{line}"
                assert issubclass(kind, glide_api.errors.GlideError), f"{where} raises {name}"


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


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e .[dev])")
def test_ruff_format_would_change_nothing() -> None:
    result = subprocess.run(
        ["ruff", "format", "--check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
