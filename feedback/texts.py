"""What a finding says, in the viewer's language: its title, its explanation, and its evidence as facts
(a label and a value in words) and small tables (docs/contracts.md section 6).

Findings are stored as a code and evidence (numbers, names, counts) and rendered here when shown, so one
stored finding reads in English or in Korean. Each sentence picks its variant from the evidence, so that
it never claims more than the numbers do: a loss that "went up 0 times" while it rose twice, a loss that
"fell by -3%", a gap "up from" a larger one. Evidence written by an older diagnosis still reads: a
number it lacks shows as "?" in a sentence, and its fact is left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import ngettext


@dataclass
class Shown:
    title: str
    explanation: str
    facts: list[dict] = field(default_factory=list)  # [{"key", "label", "value"}]
    tables: list[dict] = field(default_factory=list)  # [{"key", "caption", "columns", "rows"}]


def show(code: str, evidence: dict) -> Shown:
    """The finding ``code`` with ``evidence`` as the viewer reads it, in the active language."""
    renderer = _RENDERERS.get(code)
    if renderer is None:
        return Shown(title=code, explanation="")
    shown = renderer(_Evidence(evidence or {}))
    shown.facts = [fact for fact in shown.facts if fact["value"]]
    return shown


def render(code: str, evidence: dict) -> tuple[str, str]:
    """(title, explanation) in the active language."""
    shown = show(code, evidence)
    return shown.title, shown.explanation


# --- numbers in words ------------------------------------------------------------------------------------


class _Evidence:
    def __init__(self, evidence: dict) -> None:
        self.raw = evidence

    def num(self, key: str) -> float | None:
        value = self.raw.get(key)
        if value is None or isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None

    def int(self, key: str) -> int | None:
        number = self.num(key)
        return int(number) if number is not None else None

    def has(self, key: str) -> bool:
        return self.num(key) is not None

    def text(self, key: str) -> str:
        value = self.raw.get(key)
        return "?" if value is None else str(value)


def pct(value: float | None) -> str:
    """0.864 -> "86.4%": the one way accuracies are written."""
    return "?" if value is None else f"{value * 100:.1f}%"


def points(value: float | None, *, signed: bool = False) -> str:
    """A difference of two accuracies: 0.2 -> "20.0 percentage points"."""
    if value is None:
        return "?"
    number = f"{value * 100:+.1f}" if signed else f"{abs(value) * 100:.1f}"
    return _("%(n)s percentage points") % {"n": number}


def change(value: float | None) -> str:
    """A relative change: 0.123 -> "+12.3%", -0.05 -> "−5.0%"."""
    if value is None:
        return "?"
    return f"{value * 100:+.1f}%".replace("-", "−")


def loss(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def decimal(value: float | None) -> str:
    """A learning rate as a beginner reads it: 1e-05 -> "0.00001", 1.0 -> "1"."""
    if value is None:
        return "?"
    if value == 0 or abs(value) >= 1e-3:
        return f"{value:g}"
    return f"{value:.10f}".rstrip("0")


def count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def sequence(values: list, *, shown: int = 10) -> str:
    """Losses epoch by epoch: "6.9964 → 7.1104 → 7.2767" (the middle elided past ``shown`` values)."""
    numbers = [loss(v if isinstance(v, (int, float)) and not isinstance(v, bool) else None) for v in values]
    if len(numbers) > shown:
        numbers = [*numbers[: shown // 2 - 1], "…", *numbers[-(shown // 2) :]]
    return " → ".join(numbers)


OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}


def _lr(e: _Evidence) -> str:
    rate = decimal(e.num("learning_rate"))
    optimizer = e.raw.get("optimizer")
    if optimizer:
        return _("%(rate)s with %(optimizer)s") % {
            "rate": rate,
            "optimizer": OPTIMIZERS.get(str(optimizer).lower(), str(optimizer)),
        }
    return rate


def _fact(key: str, label: str, value: str | None) -> dict:
    return {"key": key, "label": label, "value": value or ""}


def _if(condition: bool, value: str) -> str:
    return value if condition else ""


# --- one renderer per finding ----------------------------------------------------------------------------


def _diverged(e: _Evidence) -> Shown:
    values = {"epoch": e.text("epoch"), "learning_rate": decimal(e.num("learning_rate"))}
    exploded = e.raw.get("not_a_number") is False
    if exploded and e.has("first_loss") and e.has("last_loss"):
        explanation = _(
            "The training loss rose from %(first_loss)s in the first epoch to %(last_loss)s by epoch "
            "%(epoch)s: the updates were so large that they threw the model's weights away. This is "
            "almost always a learning rate that is too high for the model (it was %(learning_rate)s)."
        ) % {**values, "first_loss": loss(e.num("first_loss")), "last_loss": loss(e.num("last_loss"))}
        loss_fact = _fact(
            "loss",
            _("Training loss"),
            _("%(first)s in epoch 1, %(last)s in epoch %(epoch)s")
            % {
                "first": loss(e.num("first_loss")),
                "last": loss(e.num("last_loss")),
                "epoch": values["epoch"],
            },
        )
    else:
        explanation = _(
            "The loss became %(loss_state)s at epoch %(epoch)s: the updates were so large that they threw "
            "the model's weights away. This is almost always a learning rate that is too high for the "
            "model (it was %(learning_rate)s)."
        ) % {**values, "loss_state": _("not a number (NaN)")}
        loss_fact = _fact(
            "loss", _("Loss"), _("not a number (NaN) from epoch %(epoch)s on") % {"epoch": values["epoch"]}
        )
    return Shown(
        _("Training diverged"),
        explanation,
        [loss_fact, _fact("learning_rate", _("Learning rate"), _if(e.has("learning_rate"), _lr(e)))],
    )


def _learning_rate_high(e: _Evidence) -> Shown:
    losses = e.raw.get("train_losses") if isinstance(e.raw.get("train_losses"), list) else None
    values = {
        "learning_rate": decimal(e.num("learning_rate")),
        "train_acc": pct(e.num("train_acc")),
        "chance": pct(e.num("chance")),
        "losses": sequence(losses or []),
    }
    rises = e.int("loss_rises")
    if rises and losses:
        said = ngettext(
            "With a learning rate of %(learning_rate)s the training loss went up instead of down once "
            "(%(losses)s), and training accuracy ended at %(train_acc)s (guessing gives %(chance)s).",
            "With a learning rate of %(learning_rate)s the training loss went up instead of down "
            "%(count)s times (%(losses)s), and training accuracy ended at %(train_acc)s (guessing gives "
            "%(chance)s).",
            rises,
        ) % {**values, "count": rises}
    elif rises == 0 and losses:
        said = (
            _(
                "With a learning rate of %(learning_rate)s training accuracy ended at %(train_acc)s, no better "
                "than guessing (%(chance)s): the steps are so large that the model cannot settle (training "
                "loss by epoch: %(losses)s)."
            )
            % values
        )
    else:  # evidence of an older diagnosis, whose count of rises left small ones out
        said = (
            _(
                "With a learning rate of %(learning_rate)s training accuracy ended at %(train_acc)s (guessing "
                "gives %(chance)s)."
            )
            % values
        )
    remedy = _("Smaller steps let the optimizer settle into a good solution.")
    explanation = f"{said} {remedy}"
    steps = e.int("steps")
    rises_value = ""
    if rises is not None and steps:
        rises_value = _("%(rises)s of %(steps)s epoch-to-epoch steps") % {"rises": rises, "steps": steps}
        if rises and e.has("largest_rise"):
            rises_value += " " + _("(the largest %(rise)s)") % {"rise": change(e.num("largest_rise"))}
    return Shown(
        _("The learning rate is too high"),
        explanation,
        [
            _fact("learning_rate", _("Learning rate"), _if(e.has("learning_rate"), _lr(e))),
            _fact("train_losses", _("Training loss by epoch"), _if(bool(losses), values["losses"])),
            _fact("loss_rises", _("Times the training loss went up"), rises_value),
            _fact(
                "train_acc",
                _("Training accuracy at the end"),
                _if(
                    e.has("train_acc"),
                    _("%(acc)s (guessing: %(chance)s)")
                    % {"acc": values["train_acc"], "chance": values["chance"]},
                ),
            ),
        ],
    )


def _learning_rate_low(e: _Evidence) -> Shown:
    values = {
        "learning_rate": decimal(e.num("learning_rate")),
        "train_acc_pct": pct(e.num("train_acc")),
        "loss_drop_pct": pct(e.num("loss_drop")),
    }
    if (e.num("loss_drop") or 0) > 0:
        explanation = (
            _(
                "The training loss fell only %(loss_drop_pct)s over the whole run and training accuracy is "
                "%(train_acc_pct)s: with a learning rate of %(learning_rate)s each step changes the model too "
                "little to learn in the epochs given."
            )
            % values
        )
    else:
        explanation = (
            _(
                "The training loss did not fall over the whole run and training accuracy is %(train_acc_pct)s: "
                "with a learning rate of %(learning_rate)s each step changes the model too little to learn in "
                "the epochs given."
            )
            % values
        )
    trend = ""
    if e.has("first_loss") and e.has("last_loss"):
        trend = (
            f"{loss(e.num('first_loss'))} → {loss(e.num('last_loss'))} ({change(-(e.num('loss_drop') or 0))})"
        )
    return Shown(
        _("The learning rate is too low"),
        explanation,
        [
            _fact("learning_rate", _("Learning rate"), _if(e.has("learning_rate"), _lr(e))),
            _fact("loss", _("Training loss, first epoch → last"), trend),
            _fact(
                "train_acc",
                _("Training accuracy at the end"),
                _if(e.has("train_acc"), values["train_acc_pct"]),
            ),
        ],
    )


def _overfitting(e: _Evidence) -> Shown:
    gap, early = e.num("gap"), e.num("early_gap")
    values = {
        "train_acc": pct(e.num("train_acc")),
        "val_acc": pct(e.num("val_acc")),
        "gap": points(gap),
        "early_gap": points(early),
        "best_epoch": e.text("best_epoch"),
        "best_val_loss": loss(e.num("best_val_loss")),
        "last_val_loss": loss(e.num("last_val_loss")),
    }
    if gap is not None and early is not None and gap > early + 0.005:
        first = _(
            "Training accuracy reached %(train_acc)s but validation accuracy is %(val_acc)s: a gap of "
            "%(gap)s, up from %(early_gap)s in the first epochs."
        )
    else:
        first = _(
            "Training accuracy reached %(train_acc)s but validation accuracy is %(val_acc)s: a gap of %(gap)s."
        )
    parts = [
        first % values,
        _("The model is memorising the training images rather than learning what generalises."),
    ]
    best, last = e.num("best_val_loss"), e.num("last_val_loss")
    rose = best is not None and last is not None and last > best
    if rose:
        parts.append(
            _(
                "Validation loss was lowest at epoch %(best_epoch)s (%(best_val_loss)s) and rose to "
                "%(last_val_loss)s by the end."
            )
            % values
        )
    parts.append(_("Dropout, weight decay and (on large enough images) augmentation make memorising harder."))
    gap_value = ""
    if gap is not None:
        gap_value = values["gap"]
        if early is not None:
            gap_value += " " + _("(%(early)s in the first epochs)") % {"early": values["early_gap"]}
    val_loss_value = ""
    if rose:
        val_loss_value = _("lowest %(best)s at epoch %(epoch)s, %(last)s at the end") % {
            "best": values["best_val_loss"],
            "epoch": values["best_epoch"],
            "last": values["last_val_loss"],
        }
    elif last is not None:
        val_loss_value = _("%(last)s at the end, its lowest") % {"last": values["last_val_loss"]}
    return Shown(
        _("The model is overfitting"),
        " ".join(parts),
        [
            _fact("train_acc", _("Training accuracy"), _if(e.has("train_acc"), str(values["train_acc"]))),
            _fact("val_acc", _("Validation accuracy"), _if(e.has("val_acc"), str(values["val_acc"]))),
            _fact("gap", _("Gap between them"), gap_value),
            _fact("val_loss", _("Validation loss"), val_loss_value),
        ],
    )


def _underfitting(e: _Evidence) -> Shown:
    values = {
        "epochs": e.text("epochs"),
        "train_acc": pct(e.num("train_acc")),
        "val_acc": pct(e.num("val_acc")),
        "chance": pct(e.num("chance")),
    }
    if e.has("val_acc"):
        first = _(
            "After %(epochs)s epochs the model gets only %(train_acc)s of the training images right and "
            "%(val_acc)s of the validation images (guessing gives %(chance)s)."
        )
    else:
        first = _(
            "After %(epochs)s epochs the model gets only %(train_acc)s of the training images right "
            "(guessing gives %(chance)s)."
        )
    large_lr = e.raw.get("large_learning_rate") is True
    over_pooled = e.raw.get("over_pooled")
    if over_pooled and not large_lr:
        second = _(
            "%(layer)s pools the whole picture into a single pixel, so the model no longer knows where "
            "anything is: a smaller pooling window keeps that, and more filters or less regularisation help too."
        ) % {"layer": over_pooled}
    elif large_lr:
        second = _(
            "Its learning rate, %(learning_rate)s, is large for %(optimizer)s: steps that big keep it from "
            "settling, so try smaller ones first, then more capacity (more filters) or less regularisation."
        ) % {
            "learning_rate": decimal(e.num("learning_rate")),
            "optimizer": OPTIMIZERS.get(str(e.raw.get("optimizer")).lower(), str(e.raw.get("optimizer"))),
        }
    else:
        second = _(
            "It is not yet able to fit the data: give it more capacity (more filters), less regularisation, "
            "or more time."
        )
    return Shown(
        _("The model is underfitting"),
        f"{first % values} {second}",
        [
            _fact("train_acc", _("Training accuracy"), _if(e.has("train_acc"), str(values["train_acc"]))),
            _fact("val_acc", _("Validation accuracy"), _if(e.has("val_acc"), str(values["val_acc"]))),
            _fact("chance", _("Guessing"), _if(e.has("chance"), values["chance"])),
            _fact("epochs", _("Epochs trained"), _if(e.has("epochs"), values["epochs"])),
            _fact("learning_rate", _("Learning rate"), _if(large_lr and e.has("learning_rate"), _lr(e))),
            _fact("over_pooled", _("Pooled to a single pixel by"), str(over_pooled or "")),
        ],
    )


def _too_few_epochs(e: _Evidence) -> Shown:
    epochs = e.int("epochs") or 0
    values = {"epochs": epochs, "val_acc": pct(e.num("val_acc")), "train_acc": pct(e.num("train_acc"))}
    if e.has("val_acc"):
        first = ngettext(
            "The model trained for only one epoch and reached %(val_acc)s on validation.",
            "The model trained for only %(epochs)s epochs and reached %(val_acc)s on validation.",
            epochs,
        )
    else:
        first = ngettext(
            "The model trained for only one epoch and got %(train_acc)s of the training images right.",
            "The model trained for only %(epochs)s epochs and got %(train_acc)s of the training images right.",
            epochs,
        )
    second = _(
        "One or two passes over the data are rarely enough: train for more epochs and watch the curves."
    )
    return Shown(
        _("Too few epochs"),
        f"{first % values} {second}",
        [
            _fact("epochs", _("Epochs trained"), _if(e.has("epochs"), str(epochs))),
            _fact("train_acc", _("Training accuracy"), _if(e.has("train_acc"), str(values["train_acc"]))),
            _fact("val_acc", _("Validation accuracy"), _if(e.has("val_acc"), str(values["val_acc"]))),
        ],
    )


def _still_improving(e: _Evidence) -> Shown:
    validation = e.raw.get("validation") is not False
    gain, drop = e.num("acc_gain"), e.num("loss_drop")
    values = {
        "gain": points(gain),
        "last_acc": pct(e.num("last_acc")),
        "drop": pct(drop),
    }
    rose = gain is not None and gain >= 0.0005
    fell = drop is not None and drop > 0
    if validation:
        if rose and fell:
            first = _(
                "Over the last two epochs validation accuracy rose by %(gain)s to %(last_acc)s and validation "
                "loss fell by %(drop)s."
            )
        elif rose:
            first = _("Over the last two epochs validation accuracy rose by %(gain)s to %(last_acc)s.")
        else:
            first = _("Over the last two epochs validation loss fell by %(drop)s.")
    elif rose and fell:
        first = _(
            "Over the last two epochs training accuracy rose by %(gain)s to %(last_acc)s and training loss "
            "fell by %(drop)s."
        )
    elif rose:
        first = _("Over the last two epochs training accuracy rose by %(gain)s to %(last_acc)s.")
    else:
        first = _("Over the last two epochs training loss fell by %(drop)s.")
    second = _(
        "The last epoch was the best: training stopped before the model was done learning. More epochs "
        "should help."
    )
    acc_label = (
        _("Validation accuracy, last two epochs") if validation else _("Training accuracy, last two epochs")
    )
    loss_label = _("Validation loss, last two epochs") if validation else _("Training loss, last two epochs")
    acc_value = ""
    if gain is not None:
        acc_value = _("%(gain)s, to %(acc)s") % {"gain": points(gain, signed=True), "acc": values["last_acc"]}
    return Shown(
        _("Still improving at the last epoch"),
        f"{first % values} {second}",
        [
            _fact("acc_gain", acc_label, acc_value),
            _fact("loss_drop", loss_label, _if(drop is not None, change(-(drop or 0)))),
            _fact("epochs", _("Epochs trained"), _if(e.has("epochs"), e.text("epochs"))),
        ],
    )


def _plateau(e: _Evidence) -> Shown:
    values = {
        "best_epoch": e.text("best_epoch"),
        "epochs": e.text("epochs"),
        "stalled_epochs": e.text("stalled_epochs"),
        "train_acc_pct": pct(e.num("train_acc")),
    }
    explanation = (
        _(
            "The best epoch was %(best_epoch)s of %(epochs)s: nothing improved for the last %(stalled_epochs)s "
            "epochs, while training accuracy stays at %(train_acc_pct)s. A learning rate that decreases over "
            "time (a cosine schedule) or a smaller one often gets past a plateau."
        )
        % values
    )
    return Shown(
        _("Training has plateaued"),
        explanation,
        [
            _fact(
                "best_epoch",
                _("Best epoch"),
                _if(
                    e.has("best_epoch"),
                    _("%(best)s of %(epochs)s") % {"best": values["best_epoch"], "epochs": values["epochs"]},
                ),
            ),
            _fact(
                "stalled_epochs",
                _("Epochs without improvement"),
                _if(e.has("stalled_epochs"), values["stalled_epochs"]),
            ),
            _fact(
                "train_loss_change",
                _("Training loss change over those epochs"),
                _if(e.has("train_loss_change"), pct(e.num("train_loss_change"))),
            ),
            _fact("train_acc", _("Training accuracy"), _if(e.has("train_acc"), values["train_acc_pct"])),
        ],
    )


def _confused_classes(e: _Evidence) -> Shown:
    a, b = e.text("a"), e.text("b")
    pairs = [p for p in e.raw.get("pairs") or [] if isinstance(p, dict)]
    first = pairs[0] if pairs else {}
    values = {
        "a": a,
        "b": b,
        "count": e.text("count"),
        "a_as_b": first.get("a_as_b", "?"),
        "b_as_a": first.get("b_as_a", "?"),
    }
    parts = [
        _(
            "On the test set, %(a)s and %(b)s were mistaken for each other %(count)s times: %(a)s taken for "
            "%(b)s %(a_as_b)s times, %(b)s for %(a)s %(b_as_a)s times. These classes look alike to the model."
        )
        % values
    ]
    if e.raw.get("overfitting"):
        parts.append(_("More varied training images (augmentation) help it tell them apart."))
    else:
        parts.append(
            _(
                "More capacity (more filters) or more training helps it learn the details that tell them apart."
            )
        )
    rows = []
    for pair in pairs:
        for true, predicted, times, rate in (
            (pair.get("a"), pair.get("b"), pair.get("a_as_b"), pair.get("a_as_b_rate")),
            (pair.get("b"), pair.get("a"), pair.get("b_as_a"), pair.get("b_as_a_rate")),
        ):
            if times:
                rows.append([str(true), str(predicted), count(times), pct(rate)])
    tables = []
    if rows:
        tables.append(
            {
                "key": "pairs",
                "caption": _("Test images taken for another class"),
                "columns": [_("Class"), _("Taken for"), _("Times"), _("Share of the class's test images")],
                "rows": rows,
            }
        )
    return Shown(
        _("Classes %(a)s and %(b)s are often confused") % {"a": a, "b": b},
        " ".join(parts),
        [_fact("accuracy", _("Test accuracy"), _if(e.has("accuracy"), pct(e.num("accuracy"))))],
        tables,
    )


def _oversized_linear(e: _Evidence) -> Shown:
    values = {
        "layer": e.text("layer"),
        "params": count(e.int("params")),
        "total_params": count(e.int("total_params")),
        "share_pct": pct(e.num("share")),
    }
    explanation = (
        _(
            "%(layer)s holds %(params)s of the model's %(total_params)s parameters (%(share_pct)s). A large "
            "Linear layer after Flatten memorises easily and slows training; pooling the feature map "
            "further before Flatten makes it much smaller."
        )
        % values
    )
    shape = e.raw.get("feature_map")
    shape_text = "×".join(str(n) for n in shape) if isinstance(shape, list) and shape else ""
    return Shown(
        _("Layer %(layer)s is very large") % values,
        explanation,
        [
            _fact("layer", _("Layer"), _if("layer" in e.raw, values["layer"])),
            _fact(
                "params",
                _("Its parameters"),
                _if(
                    e.has("params"),
                    _("%(params)s of %(total)s (%(share)s)")
                    % {
                        "params": values["params"],
                        "total": values["total_params"],
                        "share": values["share_pct"],
                    },
                ),
            ),
            _fact("feature_map", _("Feature map before Flatten"), shape_text),
        ],
    )


def _small_dataset(e: _Evidence) -> Shown:
    values = {
        "class": e.text("class"),
        "count": e.int("count") or 0,
        "min": e.int("min_images") or 20,
        "largest": e.text("largest"),
        "largest_count": e.int("largest_count") or 0,
        "ratio": e.text("ratio"),
    }
    parts = []
    if e.raw.get("few"):
        parts.append(
            _("Class %(class)s has %(count)s images: add more (at least %(min)s per class).") % values
        )
    if e.raw.get("imbalanced"):
        parts.append(
            _(
                "The classes are imbalanced: %(largest)s has %(largest_count)s images, %(ratio)s times as many "
                "as %(class)s, so the model learns to favour it. Add images to the small classes."
            )
            % values
        )
    return Shown(
        _("Too few images in a class") if e.raw.get("few") else _("Imbalanced classes"),
        " ".join(parts),
        [
            _fact("smallest", _("Smallest class"), f"{values['class']}: {values['count']}"),
            _fact("largest", _("Largest class"), f"{values['largest']}: {values['largest_count']}"),
        ],
    )


_RENDERERS: dict[str, Callable[[_Evidence], Shown]] = {
    "diverged": _diverged,
    "learning_rate_high": _learning_rate_high,
    "learning_rate_low": _learning_rate_low,
    "overfitting": _overfitting,
    "underfitting": _underfitting,
    "too_few_epochs": _too_few_epochs,
    "still_improving": _still_improving,
    "plateau": _plateau,
    "confused_classes": _confused_classes,
    "oversized_linear": _oversized_linear,
    "small_dataset": _small_dataset,
}


def as_json(shown: Shown) -> dict[str, Any]:
    return {
        "title": shown.title,
        "explanation": shown.explanation,
        "facts": shown.facts,
        "tables": shown.tables,
    }
