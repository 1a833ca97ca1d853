"""Rule-based diagnosis of a training run, and suggestions a machine can apply to the design.

Pure Python: no database, no torch, no LLM. Input is what a run stores (docs/contracts.md 1-3):

- ``epochs``: the ``epoch`` events, ``[{"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"}]``
  (accuracies as fractions 0..1; a value may be None or NaN when it could not be computed);
- ``test``: the ``result`` event's ``test`` dict (``accuracy``, ``per_class_accuracy``,
  ``confusion_matrix`` with rows = true class and columns = predicted, ``class_names``), or None;
- ``hyperparameters``: the spec's (``learning_rate``, ``optimizer``, ``epochs``, ``weight_decay``,
  ``lr_schedule``...);
- ``spec``: the normalised design spec (``layers`` with ``type``, ``name`` and PyTorch's parameter
  names beside them, ``input`` wiring, ``Residual`` blocks with inner ``layers``; ``dataset``,
  ``preprocessing``);
- ``report``: the validation report, read for per-layer ``params`` and ``output_shape``.

``diagnose()`` returns findings, most serious first. Each finding is data: a ``code``, a
``severity``, the ``evidence`` (the numbers it rests on) and ``suggestions``: edits of the design, in
the one vocabulary of designs/edits.py, which ``designs.edits.apply_edit()`` carries out and
``describe_edit()`` labels. Its title, explanation and evidence in words are rendered from the code and
the evidence in the active language when shown (feedback/texts.py), so a stored finding reads in the
viewer's language. Each suggestion fits its finding (docs/contracts.md section 6 lists what each may do).

What it knows of layers, transforms and datasets (which keep the shape, which augment, which may not be
mirrored, their sizes) it reads from the designs catalog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from designs.catalog import RANDOM_TRANSFORMS, SHAPE_KEEPING_LAYERS, TASK_LM, DatasetFacts, dataset_lookup
from designs.edits import describe_edit, find_layer, layer_name, locate_layer, walk_layers
from designs.limits import training_limits
from feedback.texts import render

# --- thresholds (each chosen so that a healthy run, see tests, trips none of them) ---------------------

# A train-loss rise of more than this fraction from one epoch to the next is a jump.
LOSS_JUMP = 0.2
# Rises above this fraction count towards oscillation; this many of the epoch steps (at least 2) is too many.
LOSS_WOBBLE = 0.05
WOBBLE_SHARE = 1 / 3
# ...and only rises bigger than this share of the first epoch's loss count at all.
LOSS_RISE_FLOOR = 0.03
# A learning rate at or above this is "large" for the optimizer (only then is a stuck run blamed on it)...
HIGH_LR = {"adam": 0.01, "adamw": 0.01, "sgd": 0.5}
# ...and at or below this "small" (only then is a flat run blamed on it).
LOW_LR = {"adam": 1e-4, "adamw": 1e-4, "sgd": 1e-3}
# Train loss falling less than this fraction from the first to the last epoch is flat.
FLAT_DROP = 0.1
# Train accuracy below this after 3+ epochs, with a small train/val gap, is underfitting.
UNDERFIT_ACC = 0.6
UNDERFIT_MAX_GAP = 0.05
# Overfitting: the final train/val accuracy gap at least this, and this much larger than early on;
# or validation loss this fraction above its best while the training loss kept falling.
OVERFIT_GAP = 0.08
OVERFIT_GAP_GROWTH = 0.03
MEMORISED_ACC = 0.99
OVERFIT_VAL_RISE = 0.1
# A rise of validation loss smaller than this is the noise of a small validation split, not a trend.
OVERFIT_VAL_RISE_MIN = 0.05
# Still improving: validation accuracy up this much over the last two epochs, or its loss down this share.
IMPROVING_ACC = 0.01
IMPROVING_LOSS = 0.05
# Plateau: nothing better for the last third of the epochs (at least 3) and train loss moving less than this.
PLATEAU_LOSS_CHANGE = 0.03
PLATEAU_MAX_TRAIN_ACC = 0.97
# Confused classes: one class predicted as another this often (share of its test samples), and at least
# this many times, so that a tiny test set's one mistake is not a pattern.
CONFUSION_RATE = 0.1
CONFUSION_MIN_COUNT = 3
# Below this test accuracy (or twice chance) the confusion is the model's failure, not a pair of look-alikes.
CONFUSION_MIN_ACCURACY = 0.5
# A Linear layer with this many parameters and this share of the model's is oversized.
BIG_LINEAR_PARAMS = 500_000
BIG_LINEAR_SHARE = 0.5

# Images smaller than this (a side, in pixels, as the dataset stores them) get no augmentation: a shift of
# one pixel is an eighth of an 8x8 digit. Measured (issue 14): RandomCrop(8, padding=1) on a digits model
# took its test accuracy from 86.4% to 70.5%. A Resize does not help: it adds no detail to move.
MIN_AUGMENT_SIZE = 16
# Widening a convolution for more capacity: to at least this many filters (the tiny starter's first
# layer), and never past this many.
MIN_FILTERS = 16
MAX_FILTERS = 256
DEFAULT_EPOCHS = 10

SEVERITIES = ("critical", "warning", "info")


@dataclass
class Finding:
    code: str
    severity: str
    evidence: dict[str, Any]
    suggestions: list[dict] = field(default_factory=list)

    @property
    def title(self) -> str:
        return render(self.code, self.evidence)[0]

    @property
    def explanation(self) -> str:
        return render(self.code, self.evidence)[1]

    def as_dict(self, *, with_text: bool = True) -> dict:
        """JSON-safe; without text for storage (texts are rendered when shown)."""
        out: dict[str, Any] = {
            "code": self.code,
            "severity": self.severity,
            "evidence": self.evidence,
            "suggestions": self.suggestions,
        }
        if with_text:
            out["title"] = self.title
            out["explanation"] = self.explanation
            out["suggestion_labels"] = [describe_edit(s) for s in self.suggestions]
        return out


# --- the diagnosis -----------------------------------------------------------------------------------


def diagnose(
    *,
    epochs: list[dict],
    test: dict | None = None,
    hyperparameters: dict | None = None,
    spec: dict | None = None,
    report: dict | None = None,
    counts: dict[str, int] | None = None,
) -> list[Finding]:
    """Findings, most severe first. ``counts`` (class -> images) of an uploaded dataset lets the diagnosis
    point at a class with too few images and at imbalance."""
    hp = dict(hyperparameters or (spec or {}).get("hyperparameters") or {})
    spec = spec or {}
    curves = _Curves(sorted(epochs, key=lambda e: e.get("epoch", 0)))
    context = _Context(hp=hp, spec=spec, report=report or {}, test=test or {}, curves=curves)

    findings: list[Finding] = []
    diverged = _diverged(context)
    if diverged:
        # Every later number is noise once the loss is NaN or exploding.
        return [diverged]
    first: tuple = (_learning_rate_high, _learning_rate_low, _overfitting, _underfitting, _too_few_epochs)
    later: tuple = (_still_improving, _plateau, _confused_classes, _oversized_linear)
    language_model = spec.get("task") == TASK_LM
    if language_model:
        # A language model has no classes and no images: only the rules about curves and the learning rate
        # hold (issue 16's own rules, on the context, the vocabulary and the heads, are not written yet).
        first = (_learning_rate_high, _learning_rate_low, _overfitting, _too_few_epochs)
        later = (_still_improving, _plateau)
    for rule in first:
        finding = rule(context, findings)
        if finding:
            findings.append(finding)
    for rule in later:
        finding = rule(context, findings)
        if finding:
            findings.append(finding)
    if language_model:
        for finding in findings:  # image augmentation means nothing to a stream of tokens
            finding.suggestions = [s for s in finding.suggestions if s.get("op") != "add_preprocessing"]
    small = _small_classes(counts or {}) if not language_model else None
    if small:
        findings.append(small)
    findings.sort(key=lambda f: SEVERITIES.index(f.severity))
    return findings


class _Curves:
    def __init__(self, epochs: list[dict]) -> None:
        self.epochs = epochs
        self.n = len(epochs)
        self.numbers = [e.get("epoch", i + 1) for i, e in enumerate(epochs)]
        self.train_loss = [_num(e.get("train_loss")) for e in epochs]
        self.train_acc = [_num(e.get("train_acc")) for e in epochs]
        self.val_loss = [_num(e.get("val_loss")) for e in epochs]
        self.val_acc = [_num(e.get("val_acc")) for e in epochs]

    @property
    def has_val(self) -> bool:
        return self.n > 0 and all(v is not None and math.isfinite(v) for v in self.val_acc + self.val_loss)

    @property
    def finite(self) -> bool:
        return all(v is not None and math.isfinite(v) for v in self.train_loss)

    @property
    def losses(self) -> list[float]:
        """The training losses, once _diverged passed: it ends the diagnosis on a missing or non-finite one."""
        return _numbers(self.train_loss)

    @property
    def val(self) -> tuple[list[float], list[float]]:
        """Validation accuracy and loss, for a rule that checked has_val."""
        return _numbers(self.val_acc), _numbers(self.val_loss)


@dataclass
class _Context:
    hp: dict
    spec: dict
    report: dict
    test: dict
    curves: _Curves

    @property
    def lr(self) -> float | None:
        value = self.hp.get("learning_rate")
        if value is None and self.curves.n:
            value = self.curves.epochs[0].get("lr")
        return _num(value)

    @property
    def optimizer(self) -> str:
        return str(self.hp.get("optimizer") or "adam").lower()

    @property
    def dataset(self) -> DatasetFacts | None:
        return dataset_lookup(self.spec.get("dataset"))

    @property
    def num_classes(self) -> int:
        names = self.test.get("class_names")
        if names:
            return len(names)
        return self.dataset.num_classes if self.dataset else 10

    @property
    def chance(self) -> float:
        return 1 / max(2, self.num_classes)


def _diverged(c: _Context) -> Finding | None:
    cv = c.curves
    if cv.n == 0:
        return None
    bad_epoch = None
    losses: list[float] = []
    for number, train, val in zip(cv.numbers, cv.train_loss, cv.val_loss, strict=True):
        if train is None or not math.isfinite(train) or (val is not None and not math.isfinite(val)):
            bad_epoch = number
            break
        losses.append(train)
    exploded = False
    if bad_epoch is None and cv.n >= 2:
        lowest = min(losses)
        # The loss ends far above where it started and above its best: the updates threw the model away.
        exploded = losses[-1] > 2 * lowest and losses[-1] > 1.5 * losses[0]
        if not exploded:
            return None
        bad_epoch = cv.numbers[-1]
    if bad_epoch is None:
        return None
    evidence: dict[str, Any] = {"epoch": bad_epoch, "learning_rate": c.lr, "not_a_number": not exploded}
    if exploded:
        evidence.update(first_loss=_r(cv.train_loss[0]), last_loss=_r(cv.train_loss[-1]))
    return Finding("diverged", "critical", evidence, _lower_lr_suggestions(c))


def _learning_rate_high(c: _Context, found: list[Finding]) -> Finding | None:
    cv, lr = c.curves, c.lr
    if cv.n == 0 or lr is None:
        return None
    losses = cv.losses
    steps = list(zip(losses, losses[1:], strict=False))
    # A rise must also be large against the starting loss: near zero, 0.01 -> 0.02 doubles but means nothing.
    floor = losses[0] * LOSS_RISE_FLOOR
    rises = [(b / a - 1) if a > 0 and b - a > floor else 0.0 for a, b in steps]
    jumps = [r for r in rises if r > LOSS_JUMP]
    wobbles = [r for r in rises if r > LOSS_WOBBLE]
    oscillating = len(steps) >= 3 and len(wobbles) >= max(2, math.ceil(len(steps) * WOBBLE_SHARE))
    final_acc = cv.train_acc[-1]
    stuck = (
        final_acc is not None
        and final_acc <= c.chance + 0.1 * (1 - c.chance)
        and lr >= HIGH_LR.get(c.optimizer, HIGH_LR["adam"])
    )
    if not (jumps or oscillating or stuck):
        return None
    evidence = {
        "learning_rate": lr,
        "optimizer": c.optimizer,
        # Every rise counts here, however small: the sentence says how often the loss went up, and the
        # curve beside it must show exactly that many (the thresholds above only decide the finding).
        "loss_rises": len([b for a, b in steps if b > a]),
        "steps": len(steps),
        "train_losses": [_r(v) for v in losses],
        "jumps": len(jumps),
        "largest_rise": _r(max((b / a - 1 for a, b in steps if 0 < a < b), default=0.0)),
        "train_acc": _r(final_acc),
        "chance": _r(c.chance),
        "stuck": bool(stuck),
    }
    return Finding(
        "learning_rate_high", "critical" if stuck else "warning", evidence, _lower_lr_suggestions(c)
    )


def _learning_rate_low(c: _Context, found: list[Finding]) -> Finding | None:
    cv, lr = c.curves, c.lr
    if cv.n < 3 or lr is None or _has(found, "learning_rate_high"):
        return None
    drop = _drop(cv.train_loss[0], cv.train_loss[-1])
    final_acc = cv.train_acc[-1] or 0.0
    if drop >= FLAT_DROP or final_acc >= UNDERFIT_ACC or lr > LOW_LR.get(c.optimizer, LOW_LR["adam"]):
        return None
    ceiling = 0.001 if c.optimizer in ("adam", "adamw") else 0.1
    value = min(_nice(lr * 10), ceiling)
    evidence = {
        "learning_rate": lr,
        "optimizer": c.optimizer,
        "first_loss": _r(cv.train_loss[0]),
        "last_loss": _r(cv.train_loss[-1]),
        "loss_drop": _r(drop),
        "train_acc": _r(final_acc),
    }
    return Finding(
        "learning_rate_low", "warning", evidence, [_set_hp("learning_rate", value)] if value > lr else []
    )


def _overfitting(c: _Context, found: list[Finding]) -> Finding | None:
    cv = c.curves
    if cv.n < 3 or not cv.has_val:
        return None
    val_acc, val_loss = cv.val
    gaps = [t - v for t, v in zip(cv.train_acc, val_acc, strict=True) if t is not None]
    if len(gaps) != cv.n:
        return None
    early_gap = max(gaps[: max(1, cv.n // 3)])
    gap_growing = gaps[-1] >= OVERFIT_GAP and gaps[-1] - early_gap >= OVERFIT_GAP_GROWTH
    # Training images all right, validation ones not: memorised, even when the gap opened early.
    memorised = (cv.train_acc[-1] or 0.0) >= MEMORISED_ACC and gaps[-1] >= OVERFIT_GAP
    best = min(range(cv.n), key=lambda i: val_loss[i])
    losses = cv.losses
    val_rising = (
        best < cv.n - 1
        and val_loss[-1] - val_loss[best] > max(val_loss[best] * OVERFIT_VAL_RISE, OVERFIT_VAL_RISE_MIN)
        and losses[-1] < losses[best]
        and gaps[-1] >= OVERFIT_GAP / 2
    )
    if not (gap_growing or memorised or val_rising):
        return None
    evidence = {
        "train_acc": _r(cv.train_acc[-1]),
        "val_acc": _r(cv.val_acc[-1]),
        "gap": _r(gaps[-1]),
        "early_gap": _r(early_gap),
        "best_epoch": cv.numbers[best],
        "best_val_loss": _r(cv.val_loss[best]),
        "last_val_loss": _r(cv.val_loss[-1]),
        "epochs": cv.n,
    }
    augmentation = _augmentation(c)
    dropout = _dropout_suggestion(c.spec)
    suggestions: list[dict] = [{"op": "add_preprocessing", "transform": augmentation}] if augmentation else []
    if dropout:
        suggestions.append(dropout)
    if not _num(c.hp.get("weight_decay")):
        suggestions.append(_set_hp("weight_decay", 5e-4))
    if cv.numbers[best] < cv.numbers[-1] - 1:
        suggestions.append(_set_hp("epochs", max(1, cv.numbers[best])))
    return Finding("overfitting", "warning", evidence, suggestions)


def _underfitting(c: _Context, found: list[Finding]) -> Finding | None:
    cv = c.curves
    if cv.n < 3 or _has(found, "learning_rate_high", "learning_rate_low", "overfitting"):
        return None
    train_acc = cv.train_acc[-1]
    if train_acc is None or train_acc >= UNDERFIT_ACC:
        return None
    gap = (train_acc - cv.val[0][-1]) if cv.has_val else 0.0
    if gap >= UNDERFIT_MAX_GAP:
        return None
    # What holds the model back, most specific first: steps too large to settle (a learning rate large for
    # its optimizer, whose loss did not jump enough to be called that), then regularisation, then size.
    large_lr = c.lr is not None and c.lr >= HIGH_LR.get(c.optimizer, HIGH_LR["adam"])
    suggestions: list[dict] = _lower_lr_suggestions(c) if large_lr else []
    for layer in walk_layers(c.spec.get("layers") or []):
        if layer.get("type") in ("Dropout", "Dropout2d") and (_num(layer.get("p", 0.5)) or 0) >= 0.3:
            suggestions.append({"op": "remove_layer", "layer": layer_name(layer)})
            break
    if (_num(c.hp.get("weight_decay")) or 0) >= 1e-3:
        suggestions.append(_set_hp("weight_decay", 1e-4))
    over_pooled = _over_pooling(c)
    if over_pooled:
        suggestions.append(over_pooled)
    widen = _widen_last_conv(c.spec)
    if widen:
        suggestions.append(widen)
    evidence = {
        "train_acc": _r(train_acc),
        "val_acc": _r(cv.val_acc[-1]) if cv.has_val else None,
        "chance": _r(c.chance),
        "epochs": cv.n,
        "learning_rate": c.lr,
        "optimizer": c.optimizer,
        "large_learning_rate": large_lr,
        "over_pooled": over_pooled["layer"] if over_pooled else None,
    }
    return Finding("underfitting", "warning", evidence, suggestions)


def _too_few_epochs(c: _Context, found: list[Finding]) -> Finding | None:
    cv = c.curves
    planned = int(_num(c.hp.get("epochs")) or cv.n)
    if cv.n == 0 or cv.n > 2 or planned > 2:
        return None
    evidence = {"epochs": cv.n, "val_acc": _r(cv.val_acc[-1]), "train_acc": _r(cv.train_acc[-1])}
    return Finding("too_few_epochs", "warning", evidence, [_set_hp("epochs", DEFAULT_EPOCHS)])


def _still_improving(c: _Context, found: list[Finding]) -> Finding | None:
    cv = c.curves
    if cv.n < 3 or _has(found, "learning_rate_high", "learning_rate_low", "too_few_epochs"):
        return None
    acc = _known(cv.val_acc if cv.has_val else cv.train_acc)
    loss = _known(cv.val_loss if cv.has_val else cv.train_loss)
    if acc is None or loss is None:
        return None
    # An overfitting model can still be improving on validation; only then is "more epochs" honest.
    if _has(found, "overfitting") and loss[-1] > min(loss):
        return None
    acc_gain = acc[-1] - acc[-3]
    loss_drop = _drop(loss[-3], loss[-1])
    rising = acc_gain >= IMPROVING_ACC and acc[-1] >= max(acc) - 0.002
    falling = loss_drop >= IMPROVING_LOSS and loss[-1] <= min(loss) and acc_gain >= 0
    if not (rising or falling):
        return None
    planned = int(_num(c.hp.get("epochs")) or cv.n)
    value = min(
        training_limits().max_epochs, max(planned * 2, planned + 5)
    )  # a suggestion that can train here
    evidence = {
        "epochs": cv.n,
        "acc_gain": _r(acc_gain),
        "loss_drop": _r(loss_drop),
        "last_acc": _r(acc[-1]),
        "validation": cv.has_val,
    }
    return Finding("still_improving", "info", evidence, [_set_hp("epochs", value)] if value > planned else [])


def _plateau(c: _Context, found: list[Finding]) -> Finding | None:
    cv = c.curves
    if cv.n < 6 or _has(found, "overfitting", "learning_rate_high", "still_improving"):
        return None
    loss = cv.val[1] if cv.has_val else cv.losses
    window = max(3, cv.n // 3)
    best = min(range(cv.n), key=lambda i: loss[i])
    train_change = abs(_drop(cv.train_loss[-window - 1], cv.train_loss[-1]))
    train_acc = cv.train_acc[-1] or 0.0
    if best > cv.n - 1 - window or train_change >= PLATEAU_LOSS_CHANGE or train_acc >= PLATEAU_MAX_TRAIN_ACC:
        return None
    suggestions = []
    if str(c.hp.get("lr_schedule") or "none") == "none":
        suggestions.append(_set_hp("lr_schedule", "cosine"))
    if c.lr:
        suggestions.append(_set_hp("learning_rate", _nice(c.lr / 3)))
    evidence = {
        "best_epoch": cv.numbers[best],
        "epochs": cv.n,
        "stalled_epochs": cv.n - 1 - best,
        "train_loss_change": _r(train_change),
        "train_acc": _r(train_acc),
    }
    return Finding("plateau", "info", evidence, suggestions)


def _confused_classes(c: _Context, found: list[Finding]) -> Finding | None:
    matrix = c.test.get("confusion_matrix")
    if not matrix or _has(found, "learning_rate_high", "learning_rate_low", "too_few_epochs"):
        return None
    accuracy = _num(c.test.get("accuracy"))
    if accuracy is not None and accuracy < max(CONFUSION_MIN_ACCURACY, 2 * c.chance):
        return None  # a model that barely learned confuses everything; the pairs would say nothing
    names = list(c.test.get("class_names") or [str(i) for i in range(len(matrix))])
    totals = [sum(row) for row in matrix]
    pairs: dict[tuple[int, int], dict] = {}
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if i == j or not totals[i]:
                continue
            if count >= CONFUSION_MIN_COUNT and count / totals[i] >= CONFUSION_RATE:
                a, b = sorted((i, j))
                pairs[(a, b)] = {
                    "a": names[a],
                    "b": names[b],
                    "a_as_b": matrix[a][b],
                    "b_as_a": matrix[b][a],
                    "a_as_b_rate": _r(matrix[a][b] / totals[a]) if totals[a] else 0.0,
                    "b_as_a_rate": _r(matrix[b][a] / totals[b]) if totals[b] else 0.0,
                }
    if not pairs:
        return None
    top = sorted(pairs.values(), key=lambda p: -(p["a_as_b"] + p["b_as_a"]))[:3]
    first = top[0]
    evidence = {
        "pairs": top,
        "a": first["a"],
        "b": first["b"],
        "count": first["a_as_b"] + first["b_as_a"],
        "accuracy": _r(_num(c.test.get("accuracy"))),
    }
    # The remedy follows the model's state: more varied images for one that memorises, more filters for
    # one that fits the training images no better than the others (augmentation would make it worse).
    overfitting = _has(found, "overfitting")
    evidence["overfitting"] = overfitting
    suggestions = []
    if overfitting:
        augmentation = _augmentation(c)
        if augmentation:
            suggestions.append({"op": "add_preprocessing", "transform": augmentation})
    else:
        widen = _widen_last_conv(c.spec)
        if widen:
            suggestions.append(widen)
    return Finding("confused_classes", "info", evidence, suggestions)


# An uploaded dataset's class with fewer images than this is too small to learn from; a largest class more
# than IMBALANCE_RATIO times the smallest makes the model favour it. The same numbers as the upload's check
# (sandbox/engine/custom.py FEW_IMAGES, IMBALANCE).
FEW_IMAGES = 20
IMBALANCE_RATIO = 3.0


def _small_classes(counts: dict[str, int]) -> Finding | None:
    """ "Class X has 12 images: add more", and imbalance, from the dataset's per-class counts."""
    sizes = {str(k): int(v) for k, v in counts.items() if isinstance(v, int | float)}
    if len(sizes) < 2:
        return None
    smallest = min(sizes, key=lambda k: (sizes[k], k))
    largest = max(sizes, key=lambda k: (sizes[k], k))
    ratio = sizes[largest] / max(1, sizes[smallest])
    few = sorted(k for k, n in sizes.items() if n < FEW_IMAGES)
    if not few and ratio <= IMBALANCE_RATIO:
        return None
    evidence = {
        "class": smallest,
        "count": sizes[smallest],
        "few": few,
        "min_images": FEW_IMAGES,
        "largest": largest,
        "largest_count": sizes[largest],
        "ratio": _r(ratio, 2),
        "imbalanced": ratio > IMBALANCE_RATIO,
    }
    return Finding("small_dataset", "warning" if few else "info", evidence, [])


def _oversized_linear(c: _Context, found: list[Finding]) -> Finding | None:
    rows = _report_layers(c.report)
    total = _report_total(c.report, rows)
    if not total:
        return None
    layers = c.spec.get("layers") or []
    for row in rows:
        if row.get("type") != "Linear" or not row.get("params"):
            continue
        params, share = row["params"], row["params"] / total
        if params < BIG_LINEAR_PARAMS or share < BIG_LINEAR_SHARE:
            continue
        evidence = {"layer": row["name"], "params": params, "total_params": total, "share": _r(share)}
        suggestions: list[dict] = []
        before = _previous_layer(layers, row["name"])
        if before is not None and before.get("type") == "Flatten":
            shape = _shape_before(rows, layer_name(before))
            evidence["feature_map"] = shape
            if shape and len(shape) == 3 and min(shape[1], shape[2]) >= 4:
                suggestions.append(
                    {
                        "op": "insert_layer",
                        "before": layer_name(before),
                        "layer": {"type": "MaxPool2d", "kernel_size": 2},
                    }
                )
            if shape and len(shape) == 3 and shape[1] * shape[2] > 1:
                suggestions.append(
                    {
                        "op": "insert_layer",
                        "before": layer_name(before),
                        "layer": {"type": "AdaptiveAvgPool2d", "output_size": 1},
                    }
                )
        else:
            layer = find_layer(layers, row["name"])
            width = int(_num((layer or {}).get("out_features")) or 0)
            if width > 256:
                suggestions.append(
                    {"op": "set_layer_param", "layer": row["name"], "param": "out_features", "value": 256}
                )
        return Finding("oversized_linear", "warning", evidence, suggestions)
    return None


# --- suggestions ---------------------------------------------------------------------------------------


def _lower_lr_suggestions(c: _Context) -> list[dict]:
    lr = c.lr
    if not lr:
        return []
    if c.optimizer in ("adam", "adamw"):
        value = 1e-3 if lr > 3e-3 else _nice(lr / 3)
    else:
        value = 0.01 if lr > 0.1 else _nice(lr / 3)
    return [_set_hp("learning_rate", value)] if value < lr else []


def _set_hp(name: str, value: Any) -> dict:
    return {"op": "set_hyperparameter", "name": name, "value": value}


def _augmentation(c: _Context) -> dict | None:
    """A random transform for an overfitting model, or None where none is fair. Only for overfitting:
    augmentation makes the training images harder, which is the opposite of what an underfitting model
    needs."""
    present = {t.get("type") for t in c.spec.get("preprocessing") or []}
    if present & RANDOM_TRANSFORMS:
        return None
    if c.dataset is not None and min(c.dataset.input_shape[1:]) < MIN_AUGMENT_SIZE:
        return None
    if c.dataset is not None and not c.dataset.mirror_keeps_class:
        # Mirror images of these are not the same class (a mirrored 2 is no 2): augment by shifting instead,
        # cropping at the size the model sees (after a Resize).
        shape = c.report.get("input_shape") or c.dataset.input_shape
        size = int(shape[1])
        return {"type": "RandomCrop", "size": size, "padding": max(1, size // 8)}
    return {"type": "RandomHorizontalFlip"}


def _over_pooling(c: _Context) -> dict | None:
    """A smaller window for the first pooling layer that shrinks a map of at least 4x4 to one pixel: the
    model then no longer knows where anything is, which a model that cannot fit needs more than a small
    map. Only for a window whose stride follows it (stride left empty)."""
    layers = c.spec.get("layers") or []
    for row in c.report.get("layers") or []:
        if row.get("type") not in ("MaxPool2d", "AvgPool2d"):
            continue
        shape_in, shape_out = row.get("input_shape"), row.get("output_shape")
        if not (isinstance(shape_in, list) and len(shape_in) == 3 and isinstance(shape_out, list)):
            continue
        if len(shape_out) != 3 or shape_out[1] * shape_out[2] != 1 or min(shape_in[1:]) < 4:
            continue
        layer = find_layer(layers, row.get("name"))
        if layer is None or layer.get("stride") is not None:
            continue
        return {"op": "set_layer_param", "layer": row["name"], "param": "kernel_size", "value": 2}
    return None


def _widen_last_conv(spec: dict) -> dict | None:
    """More filters in the last convolution: more capacity where the features are made. Twice as many,
    and at least MIN_FILTERS (doubling 1 filter to 2 would hardly change what the model can tell apart)."""
    convs = [layer for layer in walk_layers(spec.get("layers") or []) if layer.get("type") == "Conv2d"]
    if not convs:
        return None
    width = int(_num(convs[-1].get("out_channels")) or 0)
    if not 0 < width < MAX_FILTERS:
        return None
    return {
        "op": "set_layer_param",
        "layer": layer_name(convs[-1]),
        "param": "out_channels",
        "value": min(MAX_FILTERS, max(2 * width, MIN_FILTERS)),
    }


def _dropout_suggestion(spec: dict) -> dict | None:
    layers = spec.get("layers") or []
    existing = [layer for layer in walk_layers(layers) if layer.get("type") == "Dropout"]
    if existing:
        low = [layer for layer in existing if (_num(layer.get("p", 0.5)) or 0) < 0.5]
        if low:
            return {"op": "set_layer_param", "layer": layer_name(low[0]), "param": "p", "value": 0.5}
        return None
    linears = [i for i, layer in enumerate(layers) if layer.get("type") == "Linear"]
    if not linears:
        return None
    if len(linears) >= 2:
        # A hidden Linear: drop out its activations (after its activation function when one follows).
        anchor = linears[0]
        if anchor + 1 < len(layers) and layers[anchor + 1].get("type") in SHAPE_KEEPING_LAYERS - {
            "Dropout",
            "Dropout2d",
        }:
            anchor += 1
        return {
            "op": "insert_layer",
            "after": layer_name(layers[anchor]),
            "layer": {"type": "Dropout", "p": 0.3},
        }
    head = linears[0]
    if head == 0:
        return None
    return {
        "op": "insert_layer",
        "after": layer_name(layers[head - 1]),
        "layer": {"type": "Dropout", "p": 0.3},
    }


# --- spec and report helpers -------------------------------------------------------------------------


def _previous_layer(layers: list[dict], name: str) -> dict | None:
    located = locate_layer(layers, name)
    if located is None:
        return None
    container, index = located
    wired = container[index].get("input")
    if isinstance(wired, str) and wired != "x":
        return find_layer(layers, wired)
    return container[index - 1] if index > 0 else None


def _report_layers(report: dict) -> list[dict]:
    rows = []
    for row in report.get("layers") or []:
        params = next(
            (row[k] for k in ("params", "param_count", "parameters") if isinstance(row.get(k), int)), None
        )
        rows.append(
            {
                "name": row.get("name") or row.get("id"),
                "type": row.get("type"),
                "params": params,
                "output_shape": row.get("output_shape"),
            }
        )
    return rows


def _report_total(report: dict, rows: list[dict]) -> int:
    for key in ("total_params", "params", "param_count"):
        if isinstance(report.get(key), int):
            return report[key]
    totals = report.get("totals")
    if isinstance(totals, dict) and isinstance(totals.get("params"), int):
        return totals["params"]
    return sum(row["params"] or 0 for row in rows)


def _shape_before(rows: list[dict], flatten_name: str | None) -> list[int] | None:
    for index, row in enumerate(rows):
        if row["name"] == flatten_name and index > 0:
            shape = rows[index - 1]["output_shape"]
            return list(shape) if shape else None
    return None


# --- numbers ------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan") if str(value).lower() in {"nan", "inf", "-inf", "infinity"} else None


def _known(values: list[float | None]) -> list[float] | None:
    """The values when every one is a number, else None."""
    known = [v for v in values if v is not None]
    return known if len(known) == len(values) else None


def _numbers(values: list[float | None]) -> list[float]:
    """Values a rule has checked are all numbers (has_val, or _diverged passed)."""
    known = _known(values)
    if known is None:
        raise ValueError("a missing number in a curve the rule had checked")
    return known


def _r(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _drop(first: float | None, last: float | None) -> float:
    """Relative fall from first to last (negative when it rose)."""
    if first is None or last is None or not first:
        return 0.0
    return (first - last) / abs(first)


def _nice(value: float) -> float:
    """Round to 1, 2, 3 or 5 times a power of ten: 3.3e-4 -> 3e-4, 0.0333 -> 0.03."""
    if value <= 0:
        return value
    exponent = math.floor(math.log10(value))
    mantissa = value / 10**exponent
    step = min((1, 2, 3, 5, 10), key=lambda m: abs(m - mantissa))
    return float(f"{step * 10**exponent:.1g}")


def _has(found: list[Finding], *codes: str) -> bool:
    return any(f.code in codes for f in found)


def _pct(value: Any) -> str:
    number = _num(value)
    return "?" if number is None or not math.isfinite(number) else f"{number * 100:.1f}%"
