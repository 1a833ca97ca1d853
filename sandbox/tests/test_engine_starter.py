"""The compiled digits starter trains through the whole runner: sandboxed child, events, checkpoints, harness.

This is the engine's acceptance test (issue 4): at least 90% test accuracy on the CPU, a stop mid-epoch
that ends within 5 seconds with a checkpoint, and a resume that finishes with the same epoch count.
Training takes about ten seconds on a quiet two-core machine; the wall-clock limit here is only a guard
against a hang, generous because the test machine is shared (figures belong in bench/, not in asserts).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from designs import compiler, services, validation
from designs.catalog import DATASETS, dataset_lookup
from sandbox import checks, files
from sandbox.engine import datasets as ds
from sandbox.runner import run_script

WALL_LIMIT_S = 300


@pytest.fixture(autouse=True)
def one_thread(settings):
    # Small batches of a tiny model: one thread is faster than two fighting over a shared machine.
    settings.BUILDX_SANDBOX_THREADS = 1


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    return ds.ensure_cache("digits", data_dir=folder, cache_dir=folder)


@pytest.fixture(scope="module")
def starter() -> tuple[str, dict]:
    """The digits starter as the platform compiles it, and its validation report."""
    starter = services.starter_get(slug="tiny_cnn_digits")
    assert starter is not None
    spec, report = validation.validate(starter["spec"])
    code = compiler.compile_spec(spec, design_name="Tiny CNN for digits", version_number=1, report=report)
    return code, report


def config_for(cache: Path, report: dict, **changes) -> dict:
    return {
        # A training child gets the dataset without its test split (only the evaluation sees that).
        "dataset_cache": str(ds.training_cache(cache)),
        "epochs": 10,
        "resume": False,
        "checkpoint_dir": "checkpoints",
        "expect": {"params": report["totals"]["params"], "output_shape": report["output_shape"]},
        "val_split": 0.1,
        "seed": 42,
        "max_epochs": 50,
        "device": "cpu",
    } | changes


def evaluate(code: str, run_dir: Path, cache: Path, tmp_path: Path) -> dict:
    """The platform's measurement of what the child left: the compiled model, its weights, the test split."""
    events: list[dict] = []
    with files.open_regular(run_dir, "model.safetensors", max_bytes=16 * 2**20) as weights:
        result = checks.run_check(code=code, config={"mode": "evaluate", "weights": "weights.safetensors"},
                                  dataset=cache, inputs={"weights.safetensors": weights}, on_event=events.append,
                                  wall_limit_s=WALL_LIMIT_S)  # fmt: skip
    assert result.status == "succeeded", (result.cause, events)
    return next(e for e in events if e["kind"] == "result")["test"]


def test_the_compiled_digits_starter_trains_to_over_90_percent_test_accuracy(starter, digits_cache, tmp_path):
    code, report = starter
    events: list[dict] = []
    result = run_script(code=code, run_dir=tmp_path / "run", config=config_for(digits_cache, report),
                        on_event=events.append, should_stop=lambda: False, wall_limit_s=WALL_LIMIT_S)  # fmt: skip

    assert result.status == "succeeded", (result.cause, result.traceback)
    status = next(e for e in events if e["kind"] == "status")
    assert (status["device"], status["params"]) == ("cpu", report["totals"]["params"])
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 11))
    assert any(e["kind"] == "log" and e["line"].startswith("Epoch 10/10") for e in events)
    assert not any(e["kind"] == "result" for e in events)
    test = evaluate(code, tmp_path / "run", digits_cache, tmp_path)
    assert test["accuracy"] >= 0.90
    assert test["samples"] == 359 and test["class_names"] == [str(i) for i in range(10)]
    assert sum(map(sum, test["confusion_matrix"])) == 359
    checkpoints = tmp_path / "run" / "checkpoints"
    assert json.loads((checkpoints / "last.json").read_text())["epoch"] == 10
    best = json.loads((checkpoints / "best.json").read_text())
    assert best["metric"] == max(e["val_acc"] for e in epochs)


def test_a_stop_mid_epoch_ends_within_5_seconds_and_resume_finishes_the_same_epochs(
    starter, digits_cache, tmp_path
):
    code, report = starter
    run_dir = tmp_path / "run"
    events: list[dict] = []
    asked_at: list[float] = []

    def should_stop() -> bool:
        if not asked_at and any(e["kind"] == "epoch" for e in events):
            asked_at.append(time.monotonic())
        return bool(asked_at)

    result = run_script(code=code, run_dir=run_dir, config=config_for(digits_cache, report),
                        on_event=events.append, should_stop=should_stop, wall_limit_s=WALL_LIMIT_S)  # fmt: skip
    assert time.monotonic() - asked_at[0] < 5
    assert result.status == "cancelled"
    stopped = [e for e in events if e["kind"] == "stopped"]
    assert len(stopped) == 1 and 1 <= stopped[0]["epoch"] < 10
    assert not any(e["kind"] == "result" for e in events)
    completed = stopped[0]["epoch"]
    assert json.loads((run_dir / "checkpoints" / "last.json").read_text())["epoch"] == completed

    resumed: list[dict] = []
    result = run_script(code=code, run_dir=run_dir, config=config_for(digits_cache, report, resume=True),
                        on_event=resumed.append, should_stop=lambda: False, wall_limit_s=WALL_LIMIT_S)  # fmt: skip
    assert result.status == "succeeded", (result.cause, result.traceback)
    assert [e["epoch"] for e in resumed if e["kind"] == "epoch"] == list(range(completed + 1, 11))
    assert evaluate(code, run_dir, digits_cache, tmp_path)["accuracy"] >= 0.90
    assert json.loads((run_dir / "checkpoints" / "last.json").read_text())["epoch"] == 10


def test_the_engine_and_the_designs_catalog_describe_the_same_datasets():
    assert set(DATASETS) == set(ds.BUILTIN)
    for name, info in DATASETS.items():
        engine = ds.BUILTIN[name]
        assert tuple(info.input_shape) == engine.input_shape, name
        assert tuple(info.class_names) == engine.class_names, name
        for alias in (name, *info.aliases, name.lower(), name.upper()):
            assert ds.canonical_name(alias) == name == dataset_lookup(alias).name, alias


def test_every_transform_the_compiler_writes_runs_in_the_runtime_and_gives_the_input_shape():
    import sys
    import types

    import torch

    spec = dict(services.starter_get(slug="tiny_cnn_digits")["spec"], dataset="shapes")
    spec["preprocessing"] = [
        {"type": "Resize", "size": 40},
        {"type": "RandomCrop", "size": 32, "padding": 2},
        {"type": "RandomHorizontalFlip", "p": 0.5},
        {"type": "RandomVerticalFlip", "p": 0.1},
        {"type": "RandomRotation", "degrees": 10},
        {"type": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05},
        {"type": "Grayscale", "num_output_channels": 1},
        {"type": "ToTensor"},
        {"type": "Normalize"},
    ]
    spec, report = validation.validate(spec)
    code = compiler.compile_spec(spec, design_name="All transforms", version_number=1, report=report)
    engine = str(Path(ds.__file__).parent)
    sys.path.insert(0, engine)  # the script imports buildx_runtime as the child does
    try:
        module = types.ModuleType("buildx_script")
        exec(compile(code, "script.py", "exec"), module.__dict__)
    finally:
        sys.path.remove(engine)
    batch = torch.rand(4, 3, 32, 32)
    assert (
        tuple(module.TRAIN_TRANSFORM(batch).shape[1:]) == module.INPUT_SHAPE == tuple(report["input_shape"])
    )
    assert tuple(module.EVAL_TRANSFORM(batch).shape[1:]) == module.INPUT_SHAPE
