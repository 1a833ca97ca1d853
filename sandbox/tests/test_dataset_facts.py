"""The built-in datasets' facts are written once (sandbox/engine/dataset_facts.py): the engine reads them."""

from __future__ import annotations

import ast
from pathlib import Path

from sandbox.engine import buildx_runtime as rt
from sandbox.engine import dataset_facts as facts
from sandbox.engine import datasets as ds

ROOT = Path(__file__).resolve().parents[2]
APPS = ("accounts", "buildx", "designs", "feedback", "training", "sandbox", "bench")


def test_the_engines_built_in_datasets_are_the_facts_with_a_source_each():
    assert list(ds.BUILTIN) == list(facts.DATASETS)
    for name, info in ds.BUILTIN.items():
        assert info.facts is facts.DATASETS[name]
        assert (info.name, info.input_shape, info.class_names) == (
            name,
            facts.DATASETS[name].input_shape,
            facts.DATASETS[name].class_names,
        )
        assert info.source in ("bundled", "generated", "download")


def test_the_generated_shapes_are_labelled_with_the_facts_class_names():
    decoded = ds.generate_shapes(per_class=2, size=32)
    assert tuple(decoded["class_names"]) == facts.SHAPES.class_names


def test_the_runtimes_own_cifar10_and_shapes_class_names_are_the_facts():
    # buildx_runtime.py ships alone in the download bundle, so it keeps its lists: pinned here.
    assert tuple(rt.CIFAR10_CLASSES) == facts.CIFAR10.class_names
    assert tuple(rt.SHAPES_CLASSES) == facts.SHAPES.class_names
    assert tuple(rt.EMNIST_LETTERS_CLASSES) == facts.EMNIST_LETTERS.class_names


def test_the_facts_module_imports_neither_torch_nor_django():
    tree = ast.parse((ROOT / "sandbox" / "engine" / "dataset_facts.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= {"__future__", "re", "dataclasses"}


def _string_constants(path: Path) -> set[str | float]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, float))
    }


def test_no_other_module_writes_a_datasets_classes_mean_std_or_help_again():
    # One distinctive fact per dataset and kind; the runtime's CIFAR list is the one pinned copy.
    markers = {
        "T-shirt/top",
        "Ankle boot",
        "triangle",
        "airplane",
        0.1307,
        0.3081,
        0.2860,
        0.4914,
        0.2616,
        facts.DIGITS.help_en,
        facts.CIFAR10.help_ko,
        facts.MNIST.title,
        "aquarium_fish",
        0.5071,
        0.4377,
        0.1722,
        facts.SVHN.help_en,
        facts.EMNIST_LETTERS.help_ko,
    }
    allowed = {
        ROOT / "sandbox" / "engine" / "dataset_facts.py": markers,
        ROOT / "sandbox" / "engine" / "buildx_runtime.py": {"airplane", "triangle"},
    }
    copies = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "tests" in path.relative_to(ROOT).parts:
                continue
            found = (_string_constants(path) & markers) - allowed.get(path, set())
            if found:
                copies[str(path.relative_to(ROOT))] = sorted(map(str, found))
    assert copies == {}


def test_every_spelling_of_a_name_finds_the_same_dataset():
    for name, info in facts.DATASETS.items():
        for spelling in (name, name.lower(), name.upper(), *info.aliases, f" {name} "):
            assert facts.lookup(spelling) is info, spelling
    assert facts.lookup("cifar-10") is facts.CIFAR10 and facts.lookup("Fashion_MNIST") is facts.FASHION_MNIST
    assert (
        facts.lookup("imagenet") is None and facts.lookup(None) is None and facts.lookup("x" * 10_000) is None
    )
