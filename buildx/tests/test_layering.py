"""The layers' rules, read from the source: every import (function-level ones too) and every use of a
name that another module keeps private.

Bottom to top: sandbox → buildx (project level) → accounts → library (datasets) → designs → training → feedback. A module
imports its own layer and those below; no module imports the composition root (buildx's settings, urls,
asgi, routing and commands, which wire everything together). Tests are exempt from the order (they
drive the whole stack: a feedback test trains a run) but not from the rule on private names.

The sandbox layer runs code nobody reviewed; it is the bottom of the stack and imports no app, so that
nothing an app does can widen what a sandboxed child reaches, and so that the apps' order stays one way.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("accounts", "library", "designs", "training", "feedback")
PROJECT = ("sandbox", "buildx", *APPS)
ENGINE_MODULES = ("buildx_runtime", "harness", "datasets", "custom")  # imported by path inside a box


def python_files() -> list[Path]:
    return sorted(
        path
        for top in (*PROJECT, "bench")
        for path in (ROOT / top).rglob("*.py")
        if "migrations" not in path.parts and "__pycache__" not in path.parts
    )


def imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import in the tree, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def app_imports(tree: ast.AST) -> list[str]:
    """Imports of an app or of the composition root (what the sandbox layer may not have)."""
    return [
        f"{line}: {module}" for line, module in imports(tree) if module.split(".")[0] in (*APPS, "buildx")
    ]


def private_uses(tree: ast.AST) -> list[str]:
    """Names of another project module that start with an underscore, imported or reached as attributes."""
    found = []
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in (*PROJECT, *ENGINE_MODULES):
                    aliases.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module.split(".")[0] not in (*PROJECT, *ENGINE_MODULES):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                aliases.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value  # harness.rt._state: the chain starts at a module too
            if isinstance(root, ast.Name) and root.id in aliases:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


LAYERS = ("sandbox", "buildx", "accounts", "library", "designs", "training", "feedback")
COMPOSITION_ROOT = ("buildx.settings", "buildx.urls", "buildx.asgi", "buildx.routing", "buildx.management")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def in_root(module: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in COMPOSITION_ROOT)


def against_the_order(module: str, tree: ast.AST) -> list[str]:
    """Imports in ``tree`` (of ``module``) of a higher layer, or of the composition root."""
    if in_root(module):
        return []
    rank = LAYERS.index(module.split(".")[0])
    found = []
    for line, imported in imports(tree):
        top = imported.split(".")[0]
        if top not in LAYERS:
            continue
        if LAYERS.index(top) > rank or in_root(imported):
            found.append(f"{line}: {imported}")
    return found


def layered_files() -> list[Path]:
    return [
        path
        for path in python_files()
        if path.relative_to(ROOT).parts[0] in LAYERS and "tests" not in path.relative_to(ROOT).parts
    ]


def test_every_import_runs_down_the_layers_and_none_reaches_the_composition_root():
    offenders = []
    for path in layered_files():
        found = against_the_order(module_name(path), ast.parse(path.read_text()))
        offenders += [f"{path.relative_to(ROOT)}:{o}" for o in dict.fromkeys(found)]
    assert offenders == []


def test_the_order_check_finds_what_it_looks_for():
    planted = ast.parse(
        "from accounts.models import User\n"
        "def f():\n"
        "    from training.models import Run\n"
        "    import feedback.services\n"
        "    from buildx.settings import DEBUG\n"
        "    from buildx.llm import chat\n"
    )
    assert against_the_order("designs.services", planted) == [
        "3: training.models",
        "3: training.models.Run",
        "4: feedback.services",
        "5: buildx.settings",
        "5: buildx.settings.DEBUG",
    ]
    assert against_the_order("accounts.selectors", ast.parse("import training.models\n")) == [
        "1: training.models"
    ]
    assert against_the_order("buildx.llm", ast.parse("from feedback.models import LLMCall\n")) == [
        "1: feedback.models",
        "1: feedback.models.LLMCall",
    ]
    assert against_the_order("buildx.urls", planted) == []  # the composition root wires everything


def test_the_sandbox_layer_imports_no_app_and_not_the_composition_root():
    offenders = []
    for path in (ROOT / "sandbox").rglob("*.py"):
        if "tests" in path.relative_to(ROOT).parts:
            continue  # its tests may build a design with the compiler to run in a box
        offenders += [f"{path.relative_to(ROOT)}:{o}" for o in app_imports(ast.parse(path.read_text()))]
    assert offenders == []


def test_no_module_uses_another_modules_private_names():
    offenders = []
    for path in python_files():
        offenders += [f"{path.relative_to(ROOT)}:{o}" for o in private_uses(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_checks_find_what_they_look_for():
    # Positive controls: a function-level import of an app, and private names taken both ways.
    planted = ast.parse(
        "import os\n"
        "def f():\n"
        "    from training import services\n"
        "    from sandbox.engine.harness import _hidden\n"
        "    return services._private, os._exit, services.rt._state\n"
    )
    assert app_imports(planted) == ["3: training", "3: training.services"]
    assert private_uses(planted) == [
        "4: from sandbox.engine.harness import _hidden",
        "5: services._private",
        "5: services.rt._state",
    ]
