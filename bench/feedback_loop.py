"""The learning loop, measured: does applying the diagnosis's top suggestion make a flawed model better?

    python bench/feedback_loop.py                      # every case, CPU, 20-40 minutes on a shared 2-core machine
    python bench/feedback_loop.py --cases digits-lr1,shapes-1epoch
    python bench/feedback_loop.py --save-curves var/curves.json   # keep each run's curves (test fixtures)

Each case is a design with a known flaw (learning rate 1.0 or 1e-5, one epoch, no regularisation on
little data, over-pooling, an oversized Linear, a net too small to fit, ...) on the 8x8 digits or the
generated shapes, so nothing is downloaded. The bench compiles it with the designs compiler, trains it
through the harness in the sandbox exactly as a run does (``sandbox.runner.run_script``), diagnoses the
epochs and the test result (``feedback.diagnosis.diagnose``), applies the top suggestion (the first
suggestion of the first finding that has one: ``designs.edits.apply_edit``, then validation again),
trains the new design the same way, and prints the test accuracy before and after. No database: the
pieces are the pure ones the services call.

The target (issue 14): the top suggestion improves at least 80% of the cases and makes none more than
2 points worse. A case with no suggestion counts as not improved.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")
# One math thread per child: the machine is shared, and two OpenMP threads fight on two cores.
os.environ.setdefault("BUILDX_SANDBOX_THREADS", "1")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

import sandbox.runner as sandbox  # noqa: E402
from designs import compiler, validation  # noqa: E402
from designs import services as design_services  # noqa: E402
from designs.catalog import dataset_lookup  # noqa: E402
from designs.edits import apply_edit, describe_edit  # noqa: E402
from feedback.diagnosis import diagnose  # noqa: E402
from training.services import dataset_caches, design_expectation  # noqa: E402

# --- the flawed designs --------------------------------------------------------------------------------


def conv(out: int, **kw) -> dict:
    return {"type": "Conv2d", "out_channels": out, "kernel_size": 3, "padding": 1, **kw}


def pool(k: int = 2) -> dict:
    return {"type": "MaxPool2d", "kernel_size": k}


RELU, FLAT = {"type": "ReLU"}, {"type": "Flatten"}


def design(dataset: str, layers: list[dict], *, preprocessing: list[dict] | None = None, **hp) -> dict:
    """A spec on ``dataset`` whose classifier head (a last Linear is added) has one score per class."""
    classes = dataset_lookup(dataset).num_classes
    hyperparameters = {
        "epochs": 10,
        "batch_size": 32,
        "learning_rate": 0.001,
        "optimizer": "adam",
        "seed": 42,
    }
    hyperparameters.update(hp)
    return {
        "model_name": "Flawed",
        "dataset": dataset,
        "preprocessing": preprocessing if preprocessing is not None else [{"type": "Normalize"}],
        "layers": [*copy.deepcopy(layers), {"type": "Linear", "out_features": classes}],
        "hyperparameters": hyperparameters,
    }


# The tiny CNN starter's body (two convolutions, two poolings): sound, so each case changes one thing.
TINY = [conv(16), RELU, pool(), conv(32), RELU, pool(), FLAT]


def tiny(dataset: str = "digits", **hp) -> dict:
    return design(dataset, TINY, **hp)


def lenet(**hp) -> dict:
    """LeNet-5 (the starter) on the digits, resized to 32x32 as the starter does for MNIST."""
    spec = copy.deepcopy(design_services.starter_get(slug="lenet5_mnist")["spec"])
    spec["dataset"] = "digits"
    spec["hyperparameters"].update(hp)
    return spec


CASES: dict[str, tuple[str, Callable[[], dict]]] = {
    # learning rate far too high / far too low
    "digits-lr1": ("Adam, lr 1.0", lambda: tiny(learning_rate=1.0, epochs=5)),
    "digits-lr0.1": ("Adam, lr 0.1", lambda: tiny(learning_rate=0.1, epochs=6)),
    "digits-lr1e-5": ("Adam, lr 1e-5", lambda: tiny(learning_rate=1e-5, epochs=6)),
    "digits-sgd-lr1e-4": ("SGD, lr 1e-4", lambda: tiny(optimizer="sgd", learning_rate=1e-4, epochs=6)),
    "lenet-lr1": ("LeNet-5, lr 1.0", lambda: lenet(learning_rate=1.0, epochs=4)),
    "lenet-lr1e-5": ("LeNet-5, lr 1e-5", lambda: lenet(learning_rate=1e-5, epochs=5)),
    "shapes-lr1": ("Adam, lr 1.0", lambda: tiny("shapes", learning_rate=1.0, epochs=4)),
    "shapes-lr1e-5": ("Adam, lr 1e-5", lambda: tiny("shapes", learning_rate=1e-5, epochs=4)),
    # too few epochs
    "digits-1epoch": ("1 epoch", lambda: tiny(epochs=1)),
    "digits-2epochs-batch256": ("2 epochs of batch 256", lambda: tiny(epochs=2, batch_size=256)),
    "lenet-1epoch": ("LeNet-5, 1 epoch", lambda: lenet(epochs=1)),
    "shapes-1epoch": ("1 epoch", lambda: tiny("shapes", epochs=1)),
    "digits-sgd-slow": (
        "SGD without momentum, 6 epochs",
        lambda: tiny(optimizer="sgd", learning_rate=0.01, momentum=0.0, epochs=6),
    ),
    # no regularisation on little data: a wide hidden layer, half the images held out for validation
    "digits-small-noreg": (
        "wide hidden Linear, half the data, no regularisation",
        lambda: design(
            "digits",
            [conv(32), RELU, FLAT, {"type": "Linear", "out_features": 512}, RELU],
            epochs=30,
            val_split=0.5,
        ),
    ),
    "shapes-small-noreg": (
        "wide hidden Linear, half the data, no regularisation",
        lambda: design(
            "shapes", [*TINY, {"type": "Linear", "out_features": 256}, RELU], epochs=20, val_split=0.5
        ),
    ),
    # over-pooling: the picture is gone before the classifier sees it
    "digits-overpool": (
        "8x8 pooled to 1x1 by the first layer",
        lambda: design("digits", [conv(16), RELU, pool(8), FLAT], epochs=10),
    ),
    "shapes-overpool": (
        "32x32 pooled to 1x1 in two steps",
        lambda: design("shapes", [conv(8), RELU, pool(8), conv(8), RELU, pool(4), FLAT], epochs=6),
    ),
    # an oversized Linear after Flatten
    "digits-oversized-linear": (
        "Flatten of 64x8x8 into Linear(512)",
        lambda: design(
            "digits", [conv(64), RELU, FLAT, {"type": "Linear", "out_features": 512}, RELU], epochs=8
        ),
    ),
    "shapes-oversized-linear": (
        "Flatten of 16x16x16 into Linear(512)",
        lambda: design(
            "shapes", [conv(16), RELU, pool(), FLAT, {"type": "Linear", "out_features": 512}, RELU], epochs=6
        ),
    ),
    # too small to fit, or held back
    "digits-tiny-net": (
        "two 1-filter convolutions",
        lambda: design("digits", [conv(1), RELU, pool(), conv(1), RELU, pool(), FLAT], epochs=8),
    ),
    "shapes-tiny-net": (
        "two 1-filter convolutions",
        lambda: design("shapes", [conv(1), RELU, pool(4), conv(1), RELU, pool(4), FLAT], epochs=6),
    ),
    "digits-heavy-dropout": (
        "Dropout(p=0.9) before the head",
        lambda: design("digits", [*TINY, {"type": "Dropout", "p": 0.9}], epochs=8),
    ),
    "digits-heavy-weight-decay": ("weight decay 0.5", lambda: tiny(weight_decay=0.5, epochs=8)),
    "shapes-heavy-weight-decay": ("weight decay 0.5", lambda: tiny("shapes", weight_decay=0.5, epochs=6)),
}


# --- training through the sandbox ----------------------------------------------------------------------


def train(spec: dict, *, wall_s: float) -> dict:
    """One training through the sandbox, as a run trains: its curves, test result, spec and report."""
    normalised, report = validation.validate(spec)
    if report.get("errors"):
        raise SystemExit(f"invalid spec: {report['errors']}")
    code = compiler.compile_spec(normalised, design_name="Bench", version_number=1)
    epochs: list[dict] = []
    test: dict = {}

    def on_event(event: dict) -> None:
        if event.get("kind") == "epoch":
            epochs.append(
                {k: event.get(k) for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")}
            )
        elif event.get("kind") == "result":
            test.update(event.get("test") or {})

    hp = normalised["hyperparameters"]
    _training_cache, whole_cache = dataset_caches(normalised["dataset"])
    config = {
        "mode": "train",
        "resume": False,
        "checkpoint_dir": "checkpoints",
        "expect": design_expectation(report),
        "val_split": float(hp.get("val_split", 0.1)),
        "seed": int(hp.get("seed", 42)),
        "max_epochs": settings.RUNS_MAX_EPOCHS,
        "epochs": int(hp["epochs"]),
        "device": "cpu",
        "report_test": True,  # the bench has no trusted evaluation: the script's own test figures
    }
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-feedback-") as tmp:
        Path(tmp).chmod(0o755)
        result = sandbox.run_script(
            code=code,
            run_dir=Path(tmp),
            config=config,
            dataset=whole_cache,
            on_event=on_event,
            should_stop=lambda: False,
            wall_limit_s=wall_s,
            trusted_code=True,
        )
    return {
        "epochs": epochs,
        "test": test or None,
        "spec": normalised,
        "report": report,
        "seconds": time.monotonic() - t0,
        "status": result.status,
    }


def accuracy(trained: dict) -> float | None:
    return (trained["test"] or {}).get("accuracy")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--wall", type=float, default=600.0, help="seconds one training may take")
    parser.add_argument("--save-curves", type=Path, help="write each case's first run (curves, test, spec)")
    args = parser.parse_args()
    names = [n for n in args.cases.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases: {unknown}; known: {list(CASES)}")
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"{'case':<26} {'before':>7} {'after':>7} {'change':>7}  top finding -> top suggestion", flush=True)
    rows, saved = [], {}
    started = time.monotonic()
    for name in names:
        flaw, build = CASES[name]
        first = train(build(), wall_s=args.wall)
        findings = diagnose(epochs=first["epochs"], test=first["test"],
                            hyperparameters=first["spec"]["hyperparameters"],
                            spec=first["spec"], report=first["report"])  # fmt: skip
        saved[name] = {"flaw": flaw, **{k: first[k] for k in ("epochs", "test", "spec", "report")}}
        saved[name]["findings"] = [f.as_dict(with_text=False) for f in findings]
        top = next((f for f in findings if f.suggestions), None)
        before = accuracy(first)
        if top is None:
            rows.append({"name": name, "before": before, "after": None})
            codes = ", ".join(f.code for f in findings) or "no finding"
            print(f"{name:<26} {before or 0:>7.1%} {'-':>7} {'-':>7}  {codes}: no suggestion", flush=True)
            continue
        suggestion = top.suggestions[0]
        second = train(apply_edit(first["spec"], suggestion), wall_s=args.wall)
        after = accuracy(second)
        rows.append({"name": name, "before": before, "after": after, "top": top.code,
                     "suggestion": describe_edit(suggestion)})  # fmt: skip
        delta = ((after or 0) - (before or 0)) * 100
        note = "" if second["status"] == "succeeded" else f", after: {second['status']}"
        print(
            f"{name:<26} {before or 0:>7.1%} {after or 0:>7.1%} {delta:>+7.1f}  {top.code} -> "
            f"{describe_edit(suggestion)}  ({first['seconds']:.0f}s + {second['seconds']:.0f}s{note})",
            flush=True,
        )

    gains = [((r["after"] or 0) - (r["before"] or 0)) * 100 for r in rows if r["after"] is not None]
    improved = sum(1 for g in gains if g > 0)
    worse = [
        r["name"] for r in rows if r["after"] is not None and ((r["after"] or 0) - (r["before"] or 0)) < -0.02
    ]
    print()
    print(f"cases: {len(rows)}, with a suggestion: {len(gains)}")
    print(f"improved by the top suggestion: {improved} of {len(rows)} ({improved / max(1, len(rows)):.0%})")
    if gains:
        print(f"median gain: {statistics.median(gains):+.1f} points (of the cases with a suggestion)")
        print(f"worst change: {min(gains):+.1f} points; more than 2 points worse: {len(worse)} {worse or ''}")
    print(f"took {time.monotonic() - started:.0f}s; load average at the end: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    if args.save_curves:
        args.save_curves.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"curves written to {args.save_curves}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
