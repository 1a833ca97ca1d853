"""Server-rendered run pages. The live parts (log, progress, curves) are static/js/run-*.js over /ws/."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Max
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from designs.changes import spec_changes
from designs.models import Design, DesignVersion
from designs.views import starter_cards
from training import services
from training.models import Run
from training.selectors import runs_viewable_by

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


def _own_run(request: HttpRequest, pk: int) -> Run:
    return get_object_or_404(
        Run.objects.select_related(
            "design_version__design", "design_version__derived_from_run", "code_artifact"
        ),
        pk=pk,
        owner=request.user,
    )


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """My designs (with their best test accuracy so far), my recent runs and the starter designs."""
    designs = list(Design.objects.filter(owner=request.user).order_by("-updated_at")[:50])
    runs = list(
        Run.objects.filter(owner=request.user)
        .select_related("design_version__design")
        .order_by("-created_at")[:10]
    )
    best: dict[int, float] = {}
    finished = Run.objects.filter(
        owner=request.user, status=Run.Status.SUCCEEDED, design_version__design__in=designs
    ).values_list("design_version__design_id", "metrics")
    for design_id, metrics in finished:
        accuracy = (metrics or {}).get("accuracy")
        if isinstance(accuracy, int | float) and accuracy > best.get(design_id, -1.0):
            best[design_id] = float(accuracy)
    versions = dict(
        DesignVersion.objects.filter(design__in=designs)
        .values("design")
        .annotate(n=Max("number"))
        .values_list("design", "n")
    )
    for design in designs:
        design.best_accuracy = best.get(design.pk)
        design.version_count = versions.get(design.pk, 0)
    return render(
        request,
        "designs/dashboard.html",
        {"designs": designs, "runs": runs, "starters": starter_cards(), "runs_enabled": True},
    )


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    runs = Run.objects.filter(owner=request.user).select_related("design_version__design")
    status = request.GET.get("status")
    if status in Run.Status.values:
        runs = runs.filter(status=status)
    return render(
        request,
        "training/run_list.html",
        {"runs": runs[:200], "statuses": Run.Status.choices, "status": status},
    )


def _heatmap(metrics: dict) -> list[dict]:
    """Rows of the confusion matrix with a 0..9 shade per cell (share of the row), for CSS classes."""
    matrix = metrics.get("confusion_matrix") or []
    names = metrics.get("class_names") or [str(i) for i in range(len(matrix))]
    rows = []
    for name, row in zip(names, matrix, strict=False):
        total = sum(row) or 1
        rows.append({"name": name, "cells": [{"n": n, "shade": min(9, round(9 * n / total))} for n in row]})
    return rows


@login_required
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The run page; the owner's, or read-only for their instructor (the admin links here)."""
    run = get_object_or_404(
        runs_viewable_by(request.user).select_related("design_version__design", "code_artifact", "owner"),
        pk=pk,
    )
    metrics = run.metrics or {}
    version = run.design_version
    origin = version.derived_from_run
    context = {
        "run": run,
        "is_owner": run.owner_id == request.user.pk,
        # This version was made by "Apply" on the feedback of another run: link the two on the compare page.
        "origin": origin if origin is not None and origin.pk != run.pk else None,
        "origin_label": version.applied_label(_lang()),
        "epoch_metrics": [m.as_dict() for m in run.epoch_metrics.order_by("epoch")],
        "artifacts": {a.kind: a for a in run.artifacts.all()},
        "heatmap": _heatmap(metrics),
        "class_names": metrics.get("class_names") or [],
        "labels": {
            "status": dict(Run.Status.choices),
            "epoch": _("Epoch %(e)s/%(n)s"),
            "eta": _("about %(t)s left"),
            "stopping": _("Stopping…"),
            "reconnecting": _("Connection lost: reconnecting…"),
            "interrupted": _("The worker stopped answering: this run will resume from its last checkpoint."),
        },
        "per_class": list(
            zip(metrics.get("class_names") or [], metrics.get("per_class_accuracy") or [], strict=False)
        ),
    }
    return render(request, "training/run_detail.html", context)


@login_required
@require_POST
def run_start(request: HttpRequest) -> HttpResponse:
    """Train a design version (its newest ready code unless one is named): a form's Train button."""
    version = get_object_or_404(
        DesignVersion, pk=request.POST.get("design_version"), design__owner=request.user
    )
    artifact_id = request.POST.get("code_artifact", "")
    artifact = services.run_code(
        version=version, artifact_id=int(artifact_id) if artifact_id.isdigit() else None
    )
    if artifact is None:
        messages.error(request, _("This version has no checked code yet. Open its code first."))
        return redirect(request.META.get("HTTP_REFERER") or "dashboard")
    try:
        run = services.run_create(owner=request.user, version=version, artifact=artifact)
    except services.RunRefused as exc:
        messages.error(request, exc.message)
        return redirect(request.META.get("HTTP_REFERER") or "dashboard")
    return redirect("run-detail", pk=run.pk)


@login_required
@require_POST
def run_stop(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        services.run_stop(run=_own_run(request, pk))
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    return redirect("run-detail", pk=pk)


@login_required
@require_POST
def run_resume(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        services.run_resume(run=_own_run(request, pk))
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    return redirect("run-detail", pk=pk)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _accuracy(run: Run) -> float | None:
    value = (run.metrics or {}).get("accuracy")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _before_after(runs: list[Run]) -> dict:
    """Two runs as before and after: the design changes between their versions (what an applied
    suggestion did, when the later version came from the earlier run's feedback) and the test accuracy."""
    before, after = runs
    if before.design_version.derived_from_run_id == after.pk:
        before, after = after, before
    origin = after.design_version.derived_from_run
    applied = origin is not None and origin.design_version_id == before.design_version_id
    accuracy_before, accuracy_after = _accuracy(before), _accuracy(after)
    delta = None
    if accuracy_before is not None and accuracy_after is not None:
        delta = accuracy_after - accuracy_before
    return {
        "before": before,
        "after": after,
        "suggestion": after.design_version.applied_label(_lang()) if applied else "",
        "origin": origin if applied else None,
        "changes": spec_changes(before.design_version.spec, after.design_version.spec),
        "accuracy_before": _percent(accuracy_before),
        "accuracy_after": _percent(accuracy_after),
        # Percentage points, signed: "+13.5". Rounded first, so a tiny change reads 0.0, not -0.0.
        "delta": None if delta is None else f"{round(delta * 100, 1) + 0.0:+.1f}",
        "trend": None if delta is None else ("better" if delta > 0 else "worse" if delta < 0 else "same"),
    }


def _lang() -> str:
    return "ko" if (get_language() or "en").startswith("ko") else "en"


@login_required
def run_compare(request: HttpRequest) -> HttpResponse:
    ids = {int(i) for i in request.GET.getlist("ids") if i.isdigit()}
    runs = list(
        Run.objects.filter(owner=request.user, pk__in=ids)
        .select_related("design_version__design", "design_version__derived_from_run")
        .order_by("created_at")
    )
    if len(runs) != len(ids):
        # Another user's run and a run that does not exist get the same answer.
        raise Http404(_("No such run."))
    keys = [k for k in HYPERPARAMETER_LABELS if any(k in r.hyperparameters for r in runs)]
    keys += sorted({k for r in runs for k in r.hyperparameters} - set(keys))
    table = []
    for key in keys:
        values = [r.hyperparameters.get(key, "—") for r in runs]
        table.append({"key": key, "values": values, "differs": len({str(v) for v in values}) > 1})
    series = [
        {
            "id": r.pk,
            "label": f"#{r.pk} {r.design_version.design.name} v{r.design_version.number}",
            "epochs": [m.as_dict() for m in r.epoch_metrics.order_by("epoch")],
        }
        for r in runs
    ]
    return render(
        request,
        "training/run_compare.html",
        {
            "runs": runs,
            "table": table,
            "series": series,
            "enough": len(runs) >= 2,
            "pair": _before_after(runs) if len(runs) == 2 else None,
        },
    )
