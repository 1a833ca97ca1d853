"""The predict page and the model card page of a run (the API does the predicting: predict_api.py)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from training import exports, predict
from training.models import Run

CURVE_W, CURVE_H = 320, 140  # the card's SVG charts, in viewBox units

DIGIT_DATASETS = {"digits", "mnist"}


def _own_run(request: HttpRequest, pk: int) -> Run:
    return get_object_or_404(
        Run.objects.select_related("design_version__design", "code_artifact"), pk=pk, owner=request.user
    )


@login_required
def predict_page(request: HttpRequest, pk: int) -> HttpResponse:
    run = _own_run(request, pk)
    refused = None
    try:
        predict.check_predictable(run)
    except predict.PredictRefused as exc:
        refused = exc.message
    context = {
        "run": run,
        "refused": refused,
        "canvas": run.dataset.lower().replace("-", "") in DIGIT_DATASETS,
        "sandboxed": not predict.is_trusted(run),
        "downloads": exports.available(run=run),
    }
    return render(request, "training/predict.html", context, status=409 if refused else 200)


def _points(values: list[float | None], lo: float, hi: float) -> str:
    """An SVG polyline's points for values over the epochs, scaled into the chart."""
    n = len(values)
    span = (hi - lo) or 1.0
    out = []
    for i, v in enumerate(values):
        if v is None:
            continue
        x = CURVE_W * (i / (n - 1) if n > 1 else 0.5)
        y = CURVE_H - CURVE_H * (v - lo) / span
        out.append(f"{x:.1f},{y:.1f}")
    return " ".join(out)


def _charts(curves: list[dict]) -> list[dict]:
    charts = []
    for title, keys in (("loss", ("train_loss", "val_loss")), ("accuracy", ("train_acc", "val_acc"))):
        series = {k: [c.get(k) for c in curves] for k in keys}
        values = [v for vs in series.values() for v in vs if isinstance(v, (int, float))]
        if not values:
            continue
        lo, hi = (0.0, 1.0) if title == "accuracy" else (0.0, max(values))
        charts.append(
            {
                "title": title,
                "max": hi,
                "lines": [{"key": k, "points": _points(v, lo, hi)} for k, v in series.items()],
            }
        )
    return charts


@login_required
def model_card_page(request: HttpRequest, pk: int) -> HttpResponse:
    run = _own_run(request, pk)
    card = exports.model_card(run)
    context = {
        "run": run,
        "card": card,
        "charts": _charts(card["curves"]),
        "metrics_pct": {
            k: exports.percent(card["metrics"][k]) for k in ("accuracy", "precision", "recall", "f1")
        },
        "per_class_pct": [
            {"class": row["class"], "accuracy": exports.percent(row["accuracy"])}
            for row in card["metrics"]["per_class"]
        ],
        "chart_w": CURVE_W,
        "chart_h": CURVE_H,
        "downloads": exports.available(run=run),
    }
    return render(request, "training/model_card.html", context)
