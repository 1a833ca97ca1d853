"""Server-rendered run pages. The live parts (log, progress, curves) are static/js/run-*.js over /ws/."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Max
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.backends.utils import csrf_input
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.auth import signed_in_user
from designs.models import Design, DesignVersion
from designs.views import starter_cards
from training import exports, predict, run_table, selectors, services
from training.models import Run, SweepTrial

COMPARE_MAX = 12  # runs on one compare page: past that the curves are a tangle


def _own_run(request: HttpRequest, pk: int) -> Run:
    return get_object_or_404(
        Run.objects.select_related("design_version__design", "code_artifact"),
        pk=pk,
        owner=signed_in_user(request),
    )


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """My designs (with their best test accuracy so far), my recent runs and the starter designs."""
    owner = signed_in_user(request)
    designs = list(Design.objects.filter(owner=owner).order_by("-updated_at")[:50])
    runs = list(
        Run.objects.filter(owner=owner, archived_at__isnull=True)
        .select_related("design_version__design")
        .order_by("-created_at")[:10]
    )
    best: dict[int, float] = {}
    finished = Run.objects.filter(
        owner=owner, status=Run.Status.SUCCEEDED, design_version__design__in=designs
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
    # (design, number of versions, best accuracy or None) for each row of the table.
    rows = [(design, versions.get(design.pk, 0), best.get(design.pk)) for design in designs]
    return render(
        request,
        "designs/dashboard.html",
        {"designs": rows, "runs": runs, "starters": starter_cards(), "runs_enabled": True},
    )


def _back(request: HttpRequest, default: str) -> str:
    """Where a form of the runs table returns: its ``next`` when that is a page of this site's runs
    table (the view the person was looking at), else ``default``."""
    target = request.POST.get("next", "")
    if target.startswith("/runs/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    """The runs table: the user's runs (or, ``?scope=students``, those of the students they teach),
    sorted, filtered and with the columns the query string asks for, 50 a page."""
    user = signed_in_user(request)
    query = run_table.table_query(request.GET)
    if query.scope == "students" and not run_table.teaches(user):
        raise Http404(_("You do not teach a course."))
    runs = run_table.table_runs(user=user, query=query).defer("traceback", "timings", "isolation")
    page = run_table.TablePaginator(runs, run_table.PAGE_SIZE).get_page(request.GET.get("page"))
    shown = [run_table.COLUMN_BY_KEY[k] for k in query.columns]
    if query.scope != "students":
        shown = [c for c in shown if c.key != "owner"]
    students = query.scope == "students"
    designs, datasets = run_table.filter_choices(user=user, scope=query.scope)
    filtered = [c for c in run_table.HYPERPARAMETER_COLUMNS if c.hyperparameter in query.ranges]
    filtered += [c for c in run_table.HYPERPARAMETER_COLUMNS if c.hyperparameter in query.choices]
    hp_filters = [
        {
            "column": c,
            "min": run_table.range_text(query, c.hyperparameter, 0),
            "max": run_table.range_text(query, c.hyperparameter, 1),
            "value": query.choices.get(c.hyperparameter, ""),
        }
        for c in run_table.HYPERPARAMETER_COLUMNS
        if c in shown or c in filtered
    ]
    here = request.get_full_path()
    tag_base = query.url(tag="", page="")
    rows = run_table.RowsHtml(
        columns=shown, editable=not students, here=here, csrf_input=csrf_input(request), tag_base=tag_base
    )
    return render(
        request,
        "training/run_list.html",
        {
            "page": page,
            "rows": [rows.row(run) for run in page],
            "query": query,
            "columns": shown,
            "all_columns": [c for c in run_table.COLUMNS if students or c.key != "owner"],
            "headers": [{"column": c, **run_table.sort_link(query, c)} for c in shown],
            "page_links": {
                "previous": query.url(page=str(page.previous_page_number())) if page.has_previous() else "",
                "next": query.url(page=str(page.next_page_number())) if page.has_next() else "",
            },
            "hp_filters": hp_filters,
            "designs": designs,
            "datasets": datasets,
            "statuses": Run.Status.choices,
            "students": students,
            "teaches": students or run_table.teaches(user),
            "editable": not students,
            "here": here,
            "archived": query.archived == "only",
            "errors": query.errors,
            "archived_count": 0
            if query.archived != "hide" or students
            else user.runs.filter(archived_at__isnull=False).count(),
        },
    )


@login_required
@require_POST
def run_label(request: HttpRequest, pk: int) -> HttpResponse:
    """The tags and note form of the runs table and the run page (the owner's runs only)."""
    run = _own_run(request, pk)
    try:
        services.run_label(
            run=run, tags=services.tags_parse(request.POST.get("tags", "")), note=request.POST.get("note", "")
        )
        messages.success(request, _("Run #%(id)s: tags and note saved.") % {"id": run.pk})
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    return redirect(_back(request, reverse("run-detail", args=[pk])))


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
        selectors.with_queue_position(
            selectors.runs_viewable_by(signed_in_user(request)).select_related(
                "design_version__design", "design_version__derived_from_run", "code_artifact", "owner"
            )
        ),
        pk=pk,
    )
    metrics = run.metrics or {}
    version = run.design_version
    origin = version.derived_from_run
    is_owner = run.owner_id == request.user.pk
    artifacts = {a.kind: a for a in run.artifacts.all()}
    offers_exports = run.status == Run.Status.SUCCEEDED and is_owner
    owner = run.owner
    # "This run belongs to Alice (alice@example.com)", but once only when the name is the address.
    owner_contact = owner.email or owner.username
    context = {
        "run": run,
        "is_owner": is_owner,
        "owner_name": owner.display_name,
        "owner_contact": owner_contact if owner_contact != owner.display_name else "",
        "offers_exports": offers_exports,
        "onnx_reason": (
            exports.onnx_unavailable_reason() if offers_exports and not predict.is_trusted(run) else ""
        ),
        # Only the kinds the Downloads list links: checkpoint metadata is not offered on its own.
        "has_downloads": offers_exports
        or any(kind in artifacts for kind in ("script", "checkpoint_last", "checkpoint_best", "model")),
        # This version was made by "Apply" on the feedback of another run: link the two on the compare page.
        "origin": origin if origin is not None and origin.pk != run.pk else None,
        "origin_label": version.applied_label(),
        # A sweep's trial links back to its sweep, and a pruned one says so (its status reads "Cancelled").
        "sweep_trial": SweepTrial.objects.filter(run=run).first(),
        "epoch_metrics": [m.as_dict() for m in run.epoch_metrics.order_by("epoch")],
        "is_language_model": version.spec.get("task") == "language_model",
        "artifacts": artifacts,
        "heatmap": _heatmap(metrics),
        "class_names": metrics.get("class_names") or [],
        "labels": {
            "status": dict(Run.Status.choices),
            "epoch": _("Epoch %(e)s/%(n)s"),
            "eta": _("about %(t)s left"),
            "stopping": _("Stopping…"),
            "reconnecting": _("Connection lost: reconnecting…"),
            "too_many_tabs": _("Too many open connections: close other BuildX tabs. Trying again shortly…"),
            "busy": _("BuildX is busy: trying again in a minute…"),
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
        DesignVersion, pk=request.POST.get("design_version"), design__owner=signed_in_user(request)
    )
    artifact_id = request.POST.get("code_artifact", "")
    artifact = services.run_code(
        version=version, artifact_id=int(artifact_id) if artifact_id.isdigit() else None
    )
    if artifact is None:
        # run_code compiles the version when it has no code: only a design with errors gets here.
        messages.error(
            request,
            _(
                "This version cannot be trained yet: its design has errors. Open it in the editor and fix them."
            ),
        )
        return redirect(request.META.get("HTTP_REFERER") or "dashboard")
    try:
        run = services.run_create(owner=signed_in_user(request), version=version, artifact=artifact)
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


@login_required
@require_POST
def run_archive(request: HttpRequest, pk: int) -> HttpResponse:
    """Archive (``archive=1``) or unarchive (``archive=0``) the user's run."""
    run = _own_run(request, pk)
    try:
        if request.POST.get("archive", "1") == "1":
            services.run_archive(run=run)
            messages.success(
                request,
                _("Run #%(id)s is archived: it no longer shows in your lists. Find it under “Archived runs”.")
                % {"id": run.pk},
            )
        else:
            services.run_unarchive(run=run)
            messages.success(request, _("Run #%(id)s is back in your lists.") % {"id": run.pk})
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    return redirect(_back(request, reverse("run-detail", args=[pk])))


@login_required
def run_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: what deleting the run removes, and a confirm button; POST: delete it."""
    run = _own_run(request, pk)
    if request.method == "POST":
        try:
            services.run_delete(run=run)
        except services.RunRefused as exc:
            messages.error(request, exc.message)
            return redirect("run-detail", pk=pk)
        messages.success(request, _("Run #%(id)s and its files are deleted.") % {"id": pk})
        return redirect("run-list")
    return render(
        request,
        "training/run_delete.html",
        {"run": run, "files": run.artifacts.count(), "epochs": run.epoch_metrics.count()},
    )


@login_required
def run_compare(request: HttpRequest) -> HttpResponse:
    """N runs side by side: ``?ids=1,2,3`` (or ``ids=1&ids=2``, what the table's checkboxes send); runs
    the user may view (their own; their students' for an instructor)."""
    ids = {
        int(i)
        for value in request.GET.getlist("ids")
        for i in value.split(",")
        if i.isdigit() and len(i) < 19
    }
    if len(ids) > COMPARE_MAX:
        messages.error(request, _("Compare at most %(n)s runs at a time.") % {"n": COMPARE_MAX})
        ids = set(sorted(ids)[:COMPARE_MAX])
    runs = list(
        selectors.runs_viewable_by(signed_in_user(request))
        .filter(pk__in=ids)
        .select_related("design_version__design", "design_version__derived_from_run")
        .prefetch_related("epoch_metrics")
        .order_by("created_at", "pk")
    )
    if len(runs) != len(ids):
        # Another user's run and a run that does not exist get the same answer.
        raise Http404(_("No such run."))
    table = selectors.hyperparameter_table(runs=runs)
    return render(
        request,
        "training/run_compare.html",
        {
            "runs": runs,
            "table": table,
            "series": selectors.curves(runs=runs),
            "parallel": selectors.parallel_coordinates(runs=runs, table=table) if len(runs) >= 2 else None,
            "enough": len(runs) >= 2,
            "pair": selectors.before_after(runs=runs) if len(runs) == 2 else None,
        },
    )
