"""What one run may ask of this server: one source for the editor's report, the runs API and the diagnosis.

The limits are two settings, RUNS_MAX_EPOCHS and RUNS_MAX_PARAMS. The catalog's ranges say what a design
may say at all (catalog.HYPERPARAMETERS: epochs up to 1,000, anywhere); a design inside them but over a
limit here is valid (it compiles, downloads and trains on the user's own machine) and not trainable here.
The validation report lists it under ``blockers`` (docs/contracts.md section 5) with the limit and what to
change, and the runs API refuses it with the same sentences (training.services.lifecycle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _


@dataclass(frozen=True)
class TrainingLimits:
    max_epochs: int
    max_params: int

    def as_json(self) -> dict:
        return {"max_epochs": self.max_epochs, "max_params": self.max_params}


# For reports that only need to know whether a design compiles (the compiler, the warm-up).
NO_LIMITS = TrainingLimits(max_epochs=2**31, max_params=2**62)


def training_limits() -> TrainingLimits:
    """This server's limits, read when asked (tests and operators change the settings)."""
    return TrainingLimits(max_epochs=int(settings.RUNS_MAX_EPOCHS), max_params=int(settings.RUNS_MAX_PARAMS))


def limit_issues(
    *, epochs: int, params: int | None, layers: Sequence[dict] = (), limits: TrainingLimits | None = None
) -> list[dict]:
    """The design's blockers: one issue (docs/contracts.md section 5's shape) per limit it is over.

    ``layers`` are the report's top-level rows; the largest is named in the parameters' hint, since that is
    where a smaller model starts.
    """
    limits = limits or training_limits()
    issues: list[dict] = []
    if epochs > limits.max_epochs:
        ctx = {"n": f"{epochs:,}", "max": f"{limits.max_epochs:,}"}
        issues.append(
            {
                "code": "epochs_over_limit",
                "message": _("%(n)s epochs is more than this server trains: at most %(max)s.") % ctx,
                "hint": _(
                    "Set epochs to %(max)s or fewer under Hyperparameters. To train longer, download the code "
                    "and train it on your own machine."
                )
                % ctx,
                "layer": None,
                "path": "hyperparameters.epochs",
                "field": "epochs",
                "fix": {
                    "label": _("Set epochs to %(max)s") % ctx,
                    "edits": [{"op": "set_hyperparameter", "name": "epochs", "value": limits.max_epochs}],
                },
            }
        )
    if params is not None and params > limits.max_params:
        ctx = {"n": f"{params:,}", "max": f"{limits.max_params:,}"}
        largest = max(layers, key=lambda row: row.get("params") or 0, default=None)
        hint = _(
            "Make the model smaller: use fewer channels or out_features, or shrink the image before Flatten "
            "(more pooling, or AdaptiveAvgPool2d)."
        )
        if largest and largest.get("params"):
            hint += " " + _("The largest block, %(name)s, holds %(params)s of them.") % {
                "name": largest["name"],
                "params": f"{largest['params']:,}",
            }
        issues.append(
            {
                "code": "params_over_limit",
                "message": _("The model has %(n)s parameters; this server trains models of at most %(max)s.")
                % ctx,
                "hint": hint,
                # Shown with the design's own issues, above the column: the whole model is over the limit.
                "layer": largest["name"] if largest and largest.get("params") else None,
                "path": None,
                "field": None,
            }
        )
    return issues
