"""Each catalog fact has one source: datasets come from the engine's facts, and what the edit applier
knows of layers (which keep the shape, which settings are inferred) comes from the catalog's entries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from designs import catalog
from designs.edits import apply_edit
from sandbox.engine import dataset_facts

ROOT = Path(__file__).resolve().parents[2]


def string_constants(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_the_catalogs_datasets_are_the_engines_facts():
    assert catalog.DATASETS is dataset_facts.DATASETS
    assert catalog.dataset_lookup("cifar-10") is dataset_facts.CIFAR10
    served = catalog.catalog_as_json()["datasets"]
    assert served == [facts.as_json() for facts in dataset_facts.DATASETS.values()]
    assert {d["name"]: (tuple(d["input_shape"]), d["num_classes"]) for d in served} == {
        "digits": ((1, 8, 8), 10),  # docs/contracts.md section 4
        "shapes": ((3, 32, 32), 4),
        "MNIST": ((1, 28, 28), 10),
        "FashionMNIST": ((1, 28, 28), 10),
        "CIFAR10": ((3, 32, 32), 10),
        "CIFAR100": ((3, 32, 32), 100),
        "SVHN": ((3, 32, 32), 10),
        "EMNISTLetters": ((1, 28, 28), 26),
    }


def test_the_derived_sets_are_read_off_the_entries():
    assert catalog.SHAPE_KEEPING_LAYERS == {t for t, entry in catalog.LAYERS.items() if entry.keeps_shape}
    assert catalog.RANDOM_TRANSFORMS == {t for t, entry in catalog.TRANSFORMS.items() if entry.random}
    assert catalog.INFERRED_PARAMS == {
        p.name for entry in catalog.LAYERS.values() for p in entry.params if p.inferred
    }
    assert {"in_channels", "in_features", "num_features"} <= catalog.INFERRED_PARAMS


@pytest.mark.parametrize("layer_type", sorted(catalog.LAYERS))
def test_inserting_a_layer_clears_the_sizes_after_it_unless_the_catalog_says_it_keeps_the_shape(layer_type):
    spec = {
        "dataset": "digits",
        "layers": [
            {"type": "Conv2d", "name": "conv1", "in_channels": 1, "out_channels": 8},
            {"type": "ReLU", "name": "relu1"},
            {"type": "Flatten", "name": "flatten1"},
            {"type": "Linear", "name": "fc1", "in_features": 512, "out_features": 10},
        ],
    }
    new = apply_edit(spec, {"op": "insert_layer", "after": "relu1", "layer": {"type": layer_type}})

    kept = "in_features" in new["layers"][-1]
    assert kept == catalog.LAYERS[layer_type].keeps_shape
    assert new["layers"][0]["in_channels"] == 1  # before the insert: untouched


def test_a_change_of_shape_clears_every_setting_the_catalog_marks_inferred():
    inferred_layers = [
        {"type": t, "name": f"{entry.prefix}{i}", **{p.name: 1 for p in entry.params if p.inferred}}
        for i, (t, entry) in enumerate(catalog.LAYERS.items())
        if any(p.inferred for p in entry.params)
    ]
    spec = {
        "dataset": "digits",
        "layers": [{"type": "Conv2d", "name": "first", "out_channels": 4}, *inferred_layers],
    }

    new = apply_edit(spec, {"op": "set_layer_param", "layer": "first", "param": "out_channels", "value": 8})

    left = {key for layer in new["layers"][1:] for key in layer} & catalog.INFERRED_PARAMS
    assert left == set()


@pytest.mark.parametrize("module", ["designs/edits.py", "designs/changes.py", "feedback/diagnosis.py"])
def test_no_module_lists_the_inferred_settings_or_the_shape_keeping_layers_again(module):
    constants = string_constants(ROOT / module)
    assert constants & {"in_channels", "in_features", "num_features"} == set()
    assert (
        constants & {"Sigmoid", "Tanh", "GELU", "SiLU", "ELU", "LeakyReLU", "Identity", "BatchNorm1d"}
        == set()
    )
