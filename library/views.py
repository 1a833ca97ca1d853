"""The dataset library's pages: the list with the upload form, and one page per dataset.

Pages and the API (library/api.py) are two doors to the same services. A dataset the user may not see
is a 404, the same as one that does not exist.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from accounts.auth import signed_in_user
from accounts.models import Course
from library import services, text_datasets
from library.models import Dataset
from library.selectors import datasets_visible_to


@login_required
@require_GET
def dataset_list(request: HttpRequest) -> HttpResponse:
    user = signed_in_user(request)
    builtin = services.builtin_catalog()
    for row in builtin:
        row["message"] = "" if row["available"] else services.not_installed_message(row["name"], row["fix"])
    return render(
        request,
        "library/dataset_list.html",
        {
            "builtin": builtin,
            "datasets": datasets_visible_to(user).select_related("owner", "course").order_by("-created_at"),
            "max_upload_mb": settings.DATASET_MAX_UPLOAD_BYTES // 2**20,
            "max_text_mb": settings.DATASET_TEXT_MAX_BYTES // 2**20,
            "upload_config": {
                "chunk": settings.DATASET_CHUNK_BYTES,
                "max": settings.DATASET_MAX_UPLOAD_BYTES,
                "text_max": settings.DATASET_TEXT_MAX_BYTES,
                "strings": {
                    "uploading": _("Uploading: %(p)s%%"),
                    "resuming": _("The connection dropped; resuming from %(p)s%%..."),
                    "checking": _("Checking the images: %(done)s of %(total)s"),
                    "decoding": _("Making the training file: %(done)s of %(total)s"),
                    "queued": _("Waiting for a worker to check it..."),
                    "too_large": _("This zip is larger than %(max)s MB.")
                    % {"max": settings.DATASET_MAX_UPLOAD_BYTES // 2**20},
                    "failed": _("The upload failed"),
                    "tokenising": _("Checking and tokenising the text..."),
                    "text_too_large": _("This text is larger than %(max)s MB.")
                    % {"max": settings.DATASET_TEXT_MAX_BYTES // 2**20},
                },
            },
        },
    )


@login_required
@require_GET
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user = signed_in_user(request)
    dataset = get_object_or_404(datasets_visible_to(user).select_related("owner", "course"), pk=pk)
    most = max([int(n) for n in dataset.counts.values()] or [1])
    counts = [
        {
            "name": name,
            "count": int(dataset.counts.get(name, 0)),
            "width": round(100 * int(dataset.counts.get(name, 0)) / most),
        }
        for name in dataset.class_names
    ]
    mine = dataset.owner_id == user.pk
    text_problems = [text_datasets.problem_message(p) for p in dataset.problems] if dataset.is_text else []
    return render(
        request,
        "library/dataset_detail.html",
        {
            "dataset": dataset,
            "problems": services.answers_in_language(dataset.problems),
            "warnings": services.answers_in_language(dataset.warnings),
            "counts": counts,
            "text_problems": text_problems,
            "mine": mine,
            "courses": services.courses_taught_by(user) if mine else [],
            "status_config": {"dataset": dataset.pk, "status": dataset.status},
        },
    )


def _own(request: HttpRequest, pk: int) -> Dataset:
    return get_object_or_404(Dataset.objects.filter(owner=signed_in_user(request)), pk=pk)


@login_required
@require_POST
def dataset_rename(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own(request, pk)
    try:
        services.dataset_rename(
            dataset=dataset, name=request.POST.get("name", ""), description=request.POST.get("description")
        )
        messages.success(request, _("Saved."))
    except services.DatasetRefused as exc:
        messages.error(request, exc.message)
    return redirect("dataset-detail", pk=dataset.pk)


@login_required
@require_POST
def dataset_delete(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own(request, pk)
    try:
        services.dataset_delete(dataset=dataset)
    except services.DatasetRefused as exc:
        messages.error(request, exc.message)
        return redirect("dataset-detail", pk=pk)
    messages.success(request, _("The dataset is deleted."))
    return redirect("dataset-list")


@login_required
@require_POST
def dataset_share(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own(request, pk)
    raw = request.POST.get("course", "")
    course = Course.objects.filter(pk=int(raw)).first() if raw.isdigit() else None
    try:
        services.dataset_share(dataset=dataset, user=signed_in_user(request), course=course)
        messages.success(
            request,
            _("Shared with %(course)s.") % {"course": course} if course else _("Only you can see it now."),
        )
    except services.DatasetRefused as exc:
        messages.error(request, exc.message)
    return redirect("dataset-detail", pk=pk)
