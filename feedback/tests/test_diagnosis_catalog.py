"""The diagnosis knows layers, transforms and datasets only through the designs catalog: a transform or a
dataset added there is handled here without a second list to update."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from designs.catalog import DATASETS, TRANSFORMS
from feedback import diagnosis
from feedback.diagnosis import diagnose

TRAIN_ACC = [0.7, 0.9, 0.97, 0.99, 1.0, 1.0]
VAL_ACC = [0.68, 0.8, 0.82, 0.83, 0.83, 0.83]
TRAIN_LOSS = [1.0, 0.4, 0.15, 0.05, 0.02, 0.01]
VAL_LOSS = [1.05, 0.6, 0.5, 0.55, 0.6, 0.65]
EPOCHS = [
    {"epoch": i + 1, "train_loss": tl, "train_acc": ta, "val_loss": vl, "val_acc": va, "lr": 0.001}
    for i, (tl, ta, vl, va) in enumerate(zip(TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC, strict=True))
]


def overfitting_augmentation(dataset: str, preprocessing: list[dict]) -> list[dict]:
    spec = {
        "dataset": dataset,
        "layers": [
            {"type": "Conv2d", "name": "conv1", "out_channels": 16},
            {"type": "Flatten", "name": "flatten1"},
            {"type": "Linear", "name": "fc1", "out_features": 10},
        ],
        "preprocessing": preprocessing,
    }
    (finding,) = [f for f in diagnose(epochs=EPOCHS, spec=spec) if f.code == "overfitting"]
    return [s["transform"] for s in finding.suggestions if s["op"] == "add_preprocessing"]


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_augmentation_is_suggested_only_when_no_random_transform_of_the_catalog_is_there(transform):
    suggested = overfitting_augmentation("CIFAR10", [{"type": transform}])
    assert (suggested == []) == TRANSFORMS[transform].random


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_datasets_whose_mirror_images_change_class_are_shifted_not_flipped_and_tiny_ones_left_alone(name):
    facts = DATASETS[name]
    suggested = overfitting_augmentation(name, [])
    if min(facts.input_shape[1:]) < diagnosis.MIN_AUGMENT_SIZE:
        assert suggested == []
        return
    [transform] = suggested
    if facts.mirror_keeps_class:
        assert transform == {"type": "RandomHorizontalFlip"}
    else:
        size = facts.input_shape[1]
        assert transform == {"type": "RandomCrop", "size": size, "padding": max(1, size // 8)}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_chance_is_one_over_the_catalogs_class_count(name):
    stuck = [
        {"epoch": i + 1, "train_loss": loss, "train_acc": 0.0, "val_loss": loss, "val_acc": 0.0, "lr": 0.05}
        for i, loss in enumerate([2.0, 1.99, 1.99, 1.98])
    ]
    spec = {"dataset": name, "layers": [], "hyperparameters": {"learning_rate": 0.05, "optimizer": "adam"}}
    (finding,) = [f for f in diagnose(epochs=stuck, spec=spec) if f.code == "learning_rate_high"]
    assert finding.evidence["chance"] == round(1 / DATASETS[name].num_classes, 4)


def test_the_diagnosis_lists_no_dataset_transform_or_layer_facts_of_its_own():
    tree = ast.parse(Path(diagnosis.__file__).read_text(encoding="utf-8"))
    constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert constants & {"mnist", "digits", "cifar10", "fashionmnist", "shapes"} == set()
    assert constants & {"RandomVerticalFlip", "RandomRotation", "ColorJitter"} == set()
    assert constants & {"Sigmoid", "Tanh", "BatchNorm2d", "in_features", "num_features"} == set()
