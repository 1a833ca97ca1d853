"""The health page for superusers (/admin/health/): workers, queues and recent failures at a glance,
without Grafana. The same sources as /metrics: the workers' heartbeats, the broker, the database."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from buildx import metrics
from buildx.models import LLMCall
from buildx.worker_metrics import heartbeats_read
from training.models import Run
from training.selectors import run_status_counts

RECENT_FAILURES = 20


@staff_member_required
def admin_health(request: HttpRequest) -> HttpResponse:
    if not request.user.is_superuser:
        raise Http404  # instructors are staff: this page is the operator's
    try:
        workers = heartbeats_read()
        workers_error = ""
    except Exception as exc:  # Redis away: say so on the page
        workers, workers_error = [], str(exc)[:200]
    broker = dramatiq.get_broker()
    queues = []
    for queue in metrics.QUEUES:
        try:
            depth, oldest = metrics.queue_stats(broker, queue)
            queues.append({"name": queue, "depth": depth, "oldest_s": oldest, "error": ""})
        except Exception as exc:
            queues.append({"name": queue, "depth": None, "oldest_s": None, "error": str(exc)[:200]})
    since = timezone.now() - timedelta(days=1)
    context = {
        **admin.site.each_context(request),
        "title": "Health",
        "workers": workers,
        "workers_error": workers_error,
        "queues": queues,
        "runs_by_status": run_status_counts(),
        "failures": Run.objects.filter(status=Run.Status.FAILED)
        .select_related("owner")
        .order_by("-finished_at")[:RECENT_FAILURES],
        "llm_errors": LLMCall.objects.filter(created_at__gte=since)
        .exclude(error="")
        .values("purpose", "error")
        .annotate(n=Count("id"))
        .order_by("-n"),
    }
    return render(request, "training/admin_health.html", context)
