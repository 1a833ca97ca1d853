"""The learning loop, measured: does applying the diagnosis's top suggestion make a worse model better?

    python bench/feedback_loop.py                  # every case, CPU, about 5 minutes on a quiet machine
    python bench/feedback_loop.py --cases digits-lr1,lenet-1epoch --budget 120

Each case takes a starter design, makes it worse in a known way (learning rate 1.0, one epoch, no
regularisation on a small training set), compiles it with the designs compiler, trains it through the
harness in the sandbox exactly as a run does (``sandbox.runner.run_script``), diagnoses the epochs and
the test result (``feedback.diagnosis.diagnose``), applies the top suggestion (``designs.edits.apply_edit``,
then validation again), trains the new design the same way and prints the test accuracy before and
after. No database is used: the pieces are the pure ones the services call.

Datasets: ``digits`` (scikit-learn's 8x8 digits, bundled) and ``shapes`` (generated), so nothing is
downloaded. The starters made for MNIST/CIFAR-10 are moved to digits; validation infers the channels
again. Digits is too easy to overfit visibly with these models (those cases end healthy, with no
suggestion); the small-training-set case on shapes does overfit.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
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
from designs.edits import apply_edit, describe_edit  # noqa: E402
from feedback.diagnosis import diagnose  # noqa: E402
from training.services import dataset_caches, design_expectation  # noqa: E402


def _worse(slug: str, *, dataset: str = "digits", **hp) -> dict:
    spec = copy.deepcopy(design_services.starter_get(slug=slug)["spec"])
    spec["dataset"] = dataset
    # Clear what validation infers, so a starter made for 3-channel 32x32 images fits 8x8 digits.
    for layer in spec.get("layers", []):
        for key in ("in_channels", "in_features", "num_features"):
            layer.pop(key, None)
    spec["preprocessing"] = [
        t for t in spec.get("preprocessing") or [] if t.get("type") in ("Normalize", "Resize")
    ]
    spec["hyperparameters"].update(hp)
    return spec


def _no_regularisation(slug: str, **hp) -> dict:
    spec = _worse(slug, **hp)
    spec["layers"] = [layer for layer in spec["layers"] if layer.get("type") not in ("Dropout", "Dropout2d")]
    spec["hyperparameters"].pop("weight_decay", None)
    return spec


CASES = {
    "digits-lr1": lambda: _worse("tiny_cnn_digits", learning_rate=1.0, epochs=5),
    "digits-1epoch": lambda: _worse("tiny_cnn_digits", epochs=1),
    "digits-small-noreg": lambda: _no_regularisation("tiny_cnn_digits", epochs=25, val_split=0.5),
    "lenet-lr1": lambda: _worse("lenet5_mnist", learning_rate=1.0, epochs=5),
    "lenet-1epoch": lambda: _worse("lenet5_mnist", epochs=1),
    "lenet-small-noreg": lambda: _no_regularisation("lenet5_mnist", epochs=25, val_split=0.5),
    "shapes-small-noreg": lambda: _no_regularisation(
        "tiny_cnn_digits", dataset="shapes", epochs=20, val_split=0.5
    ),
    "vgg-lr1": lambda: _worse("vgg_small_cifar10", learning_rate=1.0, epochs=4, lr_schedule="none"),
    "vgg-1epoch": lambda: _worse("vgg_small_cifar10", epochs=1),
}


def train(spec: dict, *, wall_s: float) -> tuple[list[dict], dict | None, dict, dict, float, str]:
    """(epochs, test, normalised spec, report, seconds, status) of one training through the sandbox."""
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
    return epochs, (test or None), normalised, report, time.monotonic() - t0, result.status


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the whole bench")
    args = parser.parse_args()
    names = [n for n in args.cases.split(",") if n]
    deadline = time.monotonic() + args.budget
    rows = []
    print(f"{'case':<20} {'before':>7} {'after':>7}  top finding -> applied suggestion", flush=True)
    for name in names:
        left = deadline - time.monotonic()
        if left < 20:
            print(f"{name:<20} skipped: the time box ran out", flush=True)
            continue
        spec = CASES[name]()
        epochs, test, normalised, report, s1, status1 = train(spec, wall_s=min(left / 2, 240))
        findings = diagnose(epochs=epochs, test=test, hyperparameters=normalised["hyperparameters"],
                            spec=normalised, report=report)  # fmt: skip
        top = next((f for f in findings if f.suggestions), None)
        before = (test or {}).get("accuracy")
        if top is None:
            print(f"{name:<20} {before or 0:>7.4f} {'-':>7}  no suggestion ({[f.code for f in findings]})")
            rows.append((name, before, None))
            continue
        suggestion = top.suggestions[0]
        better = apply_edit(normalised, suggestion)
        left = deadline - time.monotonic()
        epochs2, test2, _n, _r, s2, status2 = train(better, wall_s=max(20, min(left, 240)))
        after = (test2 or {}).get("accuracy")
        rows.append((name, before, after))
        print(
            f"{name:<20} {before or 0:>7.4f} {after or 0:>7.4f}  {top.code} -> {describe_edit(suggestion)}"
            f"  ({s1:.0f}s + {s2:.0f}s{'' if status2 == 'succeeded' else ', ' + status2})",
            flush=True,
        )
    measured = [r for r in rows if r[2] is not None]
    improved = sum(1 for _n, b, a in measured if (a or 0) > (b or 0))
    print(f"\nimproved: {improved} of {len(measured)} cases with a suggestion ({len(rows)} trained)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
