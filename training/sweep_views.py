"""Sweep pages: "Try variations" (the form from a design) and a sweep's page, live over /ws/
(static/js/sweep-live.js). The same services as /api/v1/sweeps/."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from accounts.auth import signed_in_user
from designs.models import Design
from training.models import Sweep
from training.services import sweeps
from training.services.lifecycle import RunRefused


class VariationsForm(forms.Form):
    """Which hyperparameters to vary and how far; the service checks the ranges against the catalog."""

    vary_learning_rate = forms.BooleanField(label=_("Vary the learning rate (log scale)"), required=False)
    learning_rate_low = forms.FloatField(label=_("from"), required=False, initial=0.0001)
    learning_rate_high = forms.FloatField(label=_("to"), required=False, initial=0.1)
    vary_batch_size = forms.BooleanField(label=_("Vary the batch size"), required=False)
    batch_sizes = forms.CharField(label=_("choices"), required=False, initial="32, 64, 128", max_length=100)
    vary_dropout = forms.BooleanField(label=_("Vary dropout p"), required=False)
    dropout_low = forms.FloatField(label=_("from"), required=False, initial=0.0)
    dropout_high = forms.FloatField(label=_("to"), required=False, initial=0.5)
    vary_epochs = forms.BooleanField(label=_("Vary the epochs"), required=False)
    epochs_low = forms.IntegerField(label=_("from"), required=False, initial=2)
    epochs_high = forms.IntegerField(label=_("to"), required=False, initial=10)
    vary_weight_decay = forms.BooleanField(label=_("Vary the weight decay"), required=False)
    weight_decay_low = forms.FloatField(label=_("from"), required=False, initial=0.0)
    weight_decay_high = forms.FloatField(label=_("to"), required=False, initial=0.001)
    n_trials = forms.IntegerField(label=_("Trials"), min_value=1, initial=8)
    time_budget_min = forms.IntegerField(
        label=_("Time budget (minutes, optional)"), min_value=1, max_value=7 * 24 * 60, required=False
    )
    concurrency = forms.IntegerField(label=_("Trials at once"), min_value=1, initial=2)

    def space(self) -> dict[str, Any]:
        d = self.cleaned_data
        space: dict[str, Any] = {}
        if d.get("vary_learning_rate"):
            space["learning_rate"] = {
                "low": d.get("learning_rate_low"),
                "high": d.get("learning_rate_high"),
                "log": True,
            }
        if d.get("vary_batch_size"):
            parts = [p.strip() for p in (d.get("batch_sizes") or "").split(",") if p.strip()]
            space["batch_size"] = {"choices": [int(p) if p.isdigit() else p for p in parts]}
        if d.get("vary_dropout"):
            space["dropout"] = {"low": d.get("dropout_low"), "high": d.get("dropout_high")}
        if d.get("vary_epochs"):
            space["epochs"] = {"low": d.get("epochs_low"), "high": d.get("epochs_high")}
        if d.get("vary_weight_decay"):
            space["weight_decay"] = {"low": d.get("weight_decay_low"), "high": d.get("weight_decay_high")}
        return space


@login_required
def sweep_new(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Try variations" of the design's latest version."""
    design = get_object_or_404(Design, pk=pk, owner=signed_in_user(request))
    version = design.versions.order_by("-number").first()
    form = VariationsForm(request.POST or None)
    if request.method == "POST" and version is not None and form.is_valid():
        budget = form.cleaned_data.get("time_budget_min")
        try:
            sweep = sweeps.sweep_create(
                owner=signed_in_user(request),
                version=version,
                space=form.space(),
                n_trials=form.cleaned_data["n_trials"],
                time_budget_s=budget * 60 if budget else None,
                concurrency=form.cleaned_data["concurrency"],
            )
        except RunRefused as refused:
            form.add_error(None, refused.message)
        else:
            return redirect("sweep-detail", pk=sweep.pk)
    return render(request, "training/sweep_new.html", {"design": design, "version": version, "form": form})


def _own_sweep(request: HttpRequest, pk: int) -> Sweep:
    return get_object_or_404(
        Sweep.objects.select_related("design_version__design"), pk=pk, owner=signed_in_user(request)
    )


CURVE_W, CURVE_H = 400, 160  # the best-so-far plot's viewBox, in px


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100


def live_context(view: dict) -> dict:
    """What the sweep page's live part shows: rows, the best trial and the best-so-far curve as SVG points
    (x: trial number, y: validation accuracy 0..100%)."""
    rows = [
        {
            **t,
            "val_pct": _pct(
                t["value"] if t["value"] is not None else (t["curve"][-1]["val_acc"] if t["curve"] else None)
            ),
            "test_pct": _pct(t["test_accuracy"]),
        }
        for t in view["trials"]
    ]
    best = next((r for r in rows if r["number"] == view["best_trial"]), None)
    if best is not None:
        best = {**best, "value": _pct(best["value"])}
    step = CURVE_W / max(view["n_trials"] - 1, 1)

    def y(acc: float) -> float:
        return round(CURVE_H - acc * CURVE_H, 1)

    points = " ".join(f"{round(p['trial'] * step, 1)},{y(p['best'])}" for p in view["best_so_far"])
    dots = [
        {
            "x": round(r["number"] * step, 1),
            "y": y(r["val_pct"] / 100),
            "state": r["state"],
            "title": f"{r['number']}: {r['val_pct']:.1f}%",
        }
        for r in rows
        if r["val_pct"] is not None
    ]
    return {"view": view, "rows": rows, "best": best, "curve": {"points": points, "dots": dots}}


@login_required
def sweep_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The sweep's page; with ``?fragment=1`` only its live part, which the page fetches on each update."""
    sweep = _own_sweep(request, pk)
    context = {"sweep": sweep, **live_context(sweeps.sweep_view(sweep=sweep))}
    if request.GET.get("fragment") == "1":
        return render(request, "training/_sweep_live.html", context)
    return render(request, "training/sweep_detail.html", context)


@login_required
@require_POST
def sweep_stop(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        sweeps.sweep_stop(sweep=_own_sweep(request, pk))
    except RunRefused as refused:
        messages.error(request, refused.message)
    return redirect("sweep-detail", pk=pk)


@login_required
@require_POST
def sweep_promote(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        version = sweeps.sweep_promote(sweep=_own_sweep(request, pk))
    except RunRefused as refused:
        messages.error(request, refused.message)
        return redirect("sweep-detail", pk=pk)
    messages.success(
        request, _("The best trial is now version %(n)s of this design.") % {"n": version.number}
    )
    return redirect("design-editor", pk=version.design_id)
