"""Specs shared by the designs tests."""

from __future__ import annotations

import copy

# The JSON the original BuildX front end sends, exactly as issue 3 quotes it.
ORIGINAL_EXAMPLE = {
    "model_name": "MyCNN",
    "layers": [
        {"type": "Conv2d", "name": "conv1", "in_channels": 3, "out_channels": 32},
        {"type": "ReLU", "name": "relu1"},
        {"type": "MaxPool2d", "name": "pool1", "kernel_size": 2},
    ],
    "dataset": "CIFAR10",
    "preprocessing": [{"type": "Resize", "size": [32, 32]}, {"type": "ToTensor"}],
    "hyperparameters": {"epochs": 10, "batch_size": 64, "learning_rate": 0.001},
}


def original_example() -> dict:
    return copy.deepcopy(ORIGINAL_EXAMPLE)


def small(layers: list[dict], *, dataset: str = "digits", **top) -> dict:
    return {"model_name": "Small", "dataset": dataset, "layers": layers, **top}


def forty_layers() -> dict:
    """A 40-layer CIFAR-10 design (the size the editor's p95 budget is stated for)."""
    layers: list[dict] = []
    for stage, (channels, blocks) in enumerate(((16, 2), (32, 3), (64, 3), (128, 3))):
        for block in range(blocks):
            layers += [
                {"type": "Conv2d", "name": f"conv{stage}_{block}", "out_channels": channels, "padding": 1},
                {"type": "BatchNorm2d", "name": f"bn{stage}_{block}"},
                {"type": "ReLU", "name": f"relu{stage}_{block}"},
            ]
        if stage < 3:
            layers.append({"type": "MaxPool2d", "name": f"pool{stage}"})
    layers += [
        {"type": "AdaptiveAvgPool2d", "name": "gap"},
        {"type": "Flatten", "name": "flatten"},
        {"type": "Dropout", "name": "dropout"},
        {"type": "Linear", "name": "fc", "out_features": 10},
    ]
    assert len(layers) == 40
    return {"model_name": "Forty", "dataset": "CIFAR10", "layers": layers}
