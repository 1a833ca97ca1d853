"""Reads of runs: which runs a user may look at, what the compare page shows of several, and the course
results the admin shows instructors (a course's students with their best run, its recent runs)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

from django.db.models import (
    Case,
    Count,
    FloatField,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    When,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils.translation import gettext as _

from accounts.admin_scoping import student_ids_of
from accounts.models import Course, Membership, User
from designs.catalog import IGNORED_HYPERPARAMETERS
from designs.changes import spec_changes
from training.models import Run

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


def runs_viewable_by(user: User) -> QuerySet[Run]:
    """The user's runs, their students' runs when they teach a course, every run for a superuser.

    Only viewing: stopping, resuming, predicting and training stay with the owner (instructors cancel
    runs from the admin).
    """
    if user.is_superuser:
        return Run.objects.all()
    return Run.objects.filter(Q(owner=user) | Q(owner_id__in=student_ids_of(user)))


def with_queue_position(runs: QuerySet[Run]) -> QuerySet[Run]:
    """``runs`` annotated with ``queue_position``: 1 for the next run a worker will take, None for a run
    that is not queued. One subquery in the same SQL, whatever the number of rows."""
    ahead = (
        Run.objects.filter(status=Run.Status.QUEUED, queued_at__lt=OuterRef("queued_at"))
        .order_by()
        .values("status")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return runs.annotate(
        queue_position=Case(
            When(
                status=Run.Status.QUEUED,
                queued_at__isnull=False,
                then=Coalesce(Subquery(ahead, output_field=IntegerField()), 0) + 1,
            ),
            default=None,
            output_field=IntegerField(),
        )
    )


def with_own_queue_position(run: Run) -> Run:
    """``run`` as it is in memory (just created, stopped or resumed), given its ``queue_position``: the
    answer describes that snapshot even if a worker has claimed the run since (one count query)."""
    position = None
    if run.status == Run.Status.QUEUED and run.queued_at is not None:
        position = Run.objects.filter(status=Run.Status.QUEUED, queued_at__lt=run.queued_at).count() + 1
    # Not a column: the name with_queue_position's annotation gives a list (the stubs see no such field).
    run.queue_position = position  # type: ignore[attr-defined]
    return run


# The compare page lists these first, in this order; any other hyperparameter follows by name.
HYPERPARAMETER_LABELS = [
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "momentum",
    "weight_decay",
    "lr_schedule",
    "label_smoothing",
    "seed",
    "val_split",
]


def hyperparameter_table(*, runs: list[Run]) -> list[dict]:
    """One row per hyperparameter of any of ``runs``: its values side by side, and whether they differ."""
    keys = [k for k in HYPERPARAMETER_LABELS if any(k in r.hyperparameters for r in runs)]
    # Settings a spec may carry but nothing reads (the original BuildX's use_cloud, in runs saved before
    # it was dropped) are left out: a row of them would say something the run did not do.
    keys += sorted({k for r in runs for k in r.hyperparameters} - set(keys) - IGNORED_HYPERPARAMETERS)
    table = []
    for key in keys:
        values = [r.hyperparameters.get(key, "—") for r in runs]
        # A cell is marked when it differs from the first run's (the baseline of the comparison).
        cells = [{"value": v, "differs": str(v) != str(values[0])} for v in values]
        table.append(
            {"key": key, "values": values, "cells": cells, "differs": len({str(v) for v in values}) > 1}
        )
    return table


PARALLEL_WIDTH, PARALLEL_HEIGHT, PARALLEL_PAD = 720, 300, 40


def _axis_position(value: object, values: list[object], *, log: bool) -> float | None:
    """Where ``value`` sits on its axis, 0 (bottom) .. 1 (top): numbers by size (log for rates spanning
    decades), anything else (an optimizer's name) in sorted order."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        assert isinstance(value, int | float)
        scale = (lambda x: math.log10(x)) if log else (lambda x: float(x))
        low, high = scale(min(numbers)), scale(max(numbers))
        return 0.5 if high == low else (scale(value) - low) / (high - low)
    labels = sorted({str(v) for v in values})
    return 0.5 if len(labels) == 1 else labels.index(str(value)) / (len(labels) - 1)


def parallel_coordinates(*, runs: list[Run], table: list[dict]) -> dict:
    """A parallel-coordinates plot, drawn on the server as SVG coordinates: one vertical axis per
    hyperparameter that differs between ``runs`` (every one when none differs), then the test accuracy
    BuildX measured; one line per run through its values. A run without a test result stops before
    the last axis."""
    rows = [row for row in table if row["differs"]] or table
    axes: list[dict] = []
    for row in rows:
        values = row["values"]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        log = len(numbers) == len(values) and min(numbers) > 0 and max(numbers) / min(numbers) >= 100
        axes.append(
            {
                "label": row["key"],
                "positions": [_axis_position(v, values, log=log) for v in values],
                "low": min(numbers) if len(numbers) == len(values) else sorted({str(v) for v in values})[0],
                "high": max(numbers) if len(numbers) == len(values) else sorted({str(v) for v in values})[-1],
                "log": log,
            }
        )
    accuracies = [accuracy_value(r) for r in runs]
    measured = [a for a in accuracies if a is not None]
    low, high = (min(measured), max(measured)) if measured else (0.0, 1.0)
    axes.append(
        {
            "label": str(_("test accuracy")),
            "positions": [
                None if a is None else (0.5 if high == low else (a - low) / (high - low)) for a in accuracies
            ],
            "low": _percent(low) if measured else "—",
            "high": _percent(high) if measured else "—",
            "log": False,
        }
    )
    step = (PARALLEL_WIDTH - 2 * PARALLEL_PAD) / max(1, len(axes) - 1)
    top, bottom = PARALLEL_PAD, PARALLEL_HEIGHT - PARALLEL_PAD
    for i, axis in enumerate(axes):
        axis["x"] = round(PARALLEL_PAD + i * step, 1)
    lines = []
    for j, run in enumerate(runs):
        points = []
        for axis in axes:
            position = axis["positions"][j]
            if position is None:
                break
            points.append(f"{axis['x']},{round(bottom - position * (bottom - top), 1)}")
        lines.append({"run": run.pk, "series": j % 8, "points": " ".join(points)})
    return {
        "width": PARALLEL_WIDTH,
        "height": PARALLEL_HEIGHT,
        "top": top,
        "bottom": bottom,
        "axes": axes,
        "lines": lines,
    }


def curves(*, runs: list[Run]) -> list[dict]:
    """Each run's epoch metrics, labelled, for the overlaid charts."""
    return [
        {
            "id": r.pk,
            "label": f"#{r.pk} {r.design_version.design.name} v{r.design_version.number}",
            "epochs": [m.as_dict() for m in r.epoch_metrics.all()],  # Meta orders by epoch; prefetched
        }
        for r in runs
    ]


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def accuracy_value(run: Run) -> float | None:
    """The test accuracy BuildX measured; None when only the script reported one (not compared)."""
    if run.metrics_source != Run.MetricsSource.PLATFORM:
        return None
    value = (run.metrics or {}).get("accuracy")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def before_after(*, runs: list[Run]) -> dict:
    """Two runs as before and after: the design changes between their versions (what an applied
    suggestion did, when the later version came from the earlier run's feedback) and the test accuracy."""
    before, after = runs
    if before.design_version.derived_from_run_id == after.pk:
        before, after = after, before
    origin = after.design_version.derived_from_run
    applied = origin is not None and origin.design_version_id == before.design_version_id
    accuracy_before, accuracy_after = accuracy_value(before), accuracy_value(after)
    delta = None
    if accuracy_before is not None and accuracy_after is not None:
        delta = accuracy_after - accuracy_before
    return {
        "before": before,
        "after": after,
        "suggestion": after.design_version.applied_label() if applied else "",
        "origin": origin if applied else None,
        "changes": spec_changes(before.design_version.spec, after.design_version.spec),
        "accuracy_before": _percent(accuracy_before),
        "accuracy_after": _percent(accuracy_after),
        # Percentage points, signed: "+13.5". Rounded first, so a tiny change reads 0.0, not -0.0.
        "delta": None if delta is None else f"{round(delta * 100, 1) + 0.0:+.1f}",
        "trend": None if delta is None else ("better" if delta > 0 else "worse" if delta < 0 else "same"),
    }


RECENT_RUNS = 25  # runs shown on a course's overview page


def accuracy_of(prefix: str = "") -> Case:
    """The test accuracy stored in ``Run.metrics``, as a float in SQL, when BuildX measured it; None when
    only the script reported it (code the platform could not evaluate: people are not judged by it)."""
    return Case(
        When(
            **{f"{prefix}metrics_source": "platform"},
            then=Cast(KeyTextTransform("accuracy", f"{prefix}metrics"), FloatField()),
        ),
        default=None,
        output_field=FloatField(),
    )


class StudentResults(TypedDict):  # what course_student_results annotates on each student
    run_count: int
    succeeded_count: int
    best_accuracy: float | None
    last_run_at: datetime | None


class MeasuredAccuracy(TypedDict):  # what accuracy_of() annotates on a run (RunAdmin, course_recent_runs)
    test_accuracy: float | None


def course_student_results(*, course: Course) -> QuerySet[WithAnnotations[User, StudentResults]]:
    """The course's students, each annotated with ``run_count``, ``succeeded_count``,
    ``best_accuracy`` (None before a finished run) and ``last_run_at``: one query whatever the runs."""
    return (
        User.objects.filter(memberships__course=course, memberships__role=Membership.Role.STUDENT)
        .annotate(
            run_count=Count("runs"),
            succeeded_count=Count("runs", filter=Q(runs__status=Run.Status.SUCCEEDED)),
            best_accuracy=Max(accuracy_of("runs__")),
            last_run_at=Max("runs__created_at"),
        )
        .order_by("last_name", "first_name", "email")
    )


def course_recent_runs(
    *, course: Course, limit: int = RECENT_RUNS
) -> QuerySet[WithAnnotations[Run, MeasuredAccuracy]]:
    students = Membership.objects.filter(course=course, role=Membership.Role.STUDENT).values("user_id")
    return (
        Run.objects.filter(owner_id__in=students)
        .select_related("owner", "design_version__design")
        .annotate(test_accuracy=accuracy_of())
        .order_by("-created_at")[:limit]
    )


def run_status_counts() -> dict[str, float]:
    """Runs by status (every status, 0 included): one grouped query, for the metrics."""
    counts: dict[str, float] = {status: 0 for status in Run.Status.values}
    for row in Run.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts
