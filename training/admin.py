"""Runs in the admin, for instructors: who trained what, how well, on which device, for how long.

Scoped like every BuildX admin (accounts.admin_scoping): an instructor sees only the runs of the
students of the courses they teach. Lists stay one query for the rows whatever their number:
``list_select_related`` for the student and the design, the accuracy read from the stored metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.admin import CourseAdmin
from accounts.admin_scoping import CourseListFilter, StudentScopedAdmin, StudentScopedInline
from accounts.admin_utils import csv_response, format_accuracy, format_duration
from accounts.models import Course
from training import selectors, services
from training.models import EpochMetric, Run, RunArtifact, RunEvent
from training.selectors import MeasuredAccuracy, accuracy_of

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise, WithAnnotations

LOG_TAIL = 50  # events shown on a run's admin page; the live run page has them all


ADMIN_REFRESH_SECONDS = 5  # an active run's admin page reloads itself this often


def live_run_url(run: Run) -> str:
    return reverse("run-detail", args=[run.pk])


def event_text(event: RunEvent) -> str:
    payload = event.payload or {}
    if "line" in payload:
        return payload["line"]
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)[:500]


def number_column(name: str, label: StrOrPromise, fmt: str) -> Callable[[Any, Any], str]:
    """A read-only column that shows a float field with ``fmt`` ("{:.4f}", "{:.1%}") and "-" for none."""

    @admin.display(description=label)
    def show(self, row) -> str:
        value = getattr(row, name)
        return "-" if value is None else fmt.format(value)

    return show


class ReadOnlyInline(StudentScopedInline, admin.TabularInline):
    template = "admin/edit_inline/readonly_tabular.html"
    owner_field = "run__owner"
    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class EpochMetricInline(ReadOnlyInline):
    model = EpochMetric
    fields = ("epoch", "train_loss_", "train_acc_", "val_loss_", "val_acc_", "lr_", "seconds_")
    readonly_fields = fields
    train_loss_ = number_column("train_loss", _("train loss"), "{:.4f}")
    train_acc_ = number_column("train_acc", _("train accuracy"), "{:.1%}")
    val_loss_ = number_column("val_loss", _("validation loss"), "{:.4f}")
    val_acc_ = number_column("val_acc", _("validation accuracy"), "{:.1%}")
    lr_ = number_column("lr", _("learning rate"), "{:g}")
    seconds_ = number_column("seconds", _("seconds"), "{:.1f}")
    verbose_name = _("epoch")
    verbose_name_plural = _("epochs")


class RunLogTailInline(ReadOnlyInline):
    """The last LOG_TAIL events of the run (RunAdmin.get_formset_kwargs cuts the tail)."""

    model = RunEvent
    fields = ("seq", "kind", "text", "created_at")
    readonly_fields = fields
    verbose_name = _("event")
    # Lazy all the way: a "%" here would translate once, at import, in the default language.
    verbose_name_plural = format_lazy(_("log tail (last {count} events)"), count=LOG_TAIL)

    @admin.display(description=_("line"))
    def text(self, event: RunEvent) -> str:
        return event_text(event)


class RunArtifactInline(ReadOnlyInline):
    model = RunArtifact
    fields = ("kind", "filename", "size", "epoch", "updated_at")
    readonly_fields = fields


@admin.register(Run)
class RunAdmin(StudentScopedAdmin):
    """Runs are written by the worker only; here they are read, cancelled and exported."""

    owner_field = "owner"
    list_display = [
        "id",
        "student",
        "design",
        "status",
        "accuracy",
        "dataset",
        "device",
        "duration",
        "created_at",
    ]
    list_display_links = ["id", "student"]
    list_filter = [CourseListFilter, "status", "dataset", ("owner", admin.RelatedOnlyFieldListFilter)]
    search_fields = [
        "owner__email",
        "owner__first_name",
        "owner__last_name",
        "design_version__design__name",
    ]
    list_select_related = ["owner", "design_version__design"]
    date_hierarchy = "created_at"
    actions = ["cancel_runs", "export_csv"]  # and those of the apps above: register_run_action()
    inlines = [EpochMetricInline, RunLogTailInline, RunArtifactInline]

    # Deleting goes through the runs service, as the pages and the API do: the rows and, once committed,
    # the run's files in storage. A run a worker may still write to is not deleted.
    def has_delete_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        if obj is not None and not obj.is_finished():
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Run) -> None:
        services.run_delete(run=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        kept = queryset.exclude(status__in=Run.FINISHED).count()
        services.runs_delete(runs=queryset.filter(status__in=Run.FINISHED))
        if kept:
            self.message_user(
                request,
                ngettext(
                    "%(count)d run that may still train was kept: stop it first, then delete it.",
                    "%(count)d runs that may still train were kept: stop them first, then delete them.",
                    kept,
                )
                % {"count": kept},
                messages.WARNING,
            )

    fieldsets = [
        (None, {"fields": ["owner", "design_link", "live_page", "status", "dataset", "device", "params"]}),
        (
            _("Progress"),
            {
                "fields": [
                    "epoch",
                    "epochs",
                    "progress_shown",
                    "duration",
                    "created_at",
                    "started_at",
                    "finished_at",
                ]
            },
        ),
        (_("Result"), {"fields": ["accuracy", "metrics", "cause", "error", "traceback"]}),
        (
            _("Worker"),
            {
                "classes": ["collapse"],
                "fields": ["hyperparameters", "isolation", "timings", "worker_id", "attempt", "auto_resumes"],
            },
        ),
    ]

    class Media:
        js = ["js/training-admin-refresh.js"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        return super().get_queryset(request).annotate(test_accuracy=accuracy_of())

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return flatten_fieldsets(self.get_fieldsets(request, obj))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are created from a design, by their owner

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the worker owns a run's state; the admin cancels through the service

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("training.cancel_run")

    def get_formset_kwargs(self, request: HttpRequest, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, RunLogTailInline) and obj is not None:
            # Sequence numbers are contiguous from 1 (allocated from Run.last_seq), so the tail is a range:
            # no slicing, which the inline formset could not filter afterwards.
            kwargs["queryset"] = kwargs["queryset"].filter(seq__gt=obj.last_seq - LOG_TAIL)
        return kwargs

    @admin.display(description=_("student"), ordering="owner__email")
    def student(self, run: Run) -> str:
        return run.owner.display_name

    @admin.display(description=_("design"), ordering="design_version__design__name")
    def design(self, run: Run) -> str:
        return f"{run.design_version.design.name} v{run.design_version.number}"

    @admin.display(description=_("design"))
    def design_link(self, run: Run) -> str:
        url = reverse("admin:designs_designversion_change", args=[run.design_version_id])
        return format_html('<a href="{}">{}</a>', url, self.design(run))

    @admin.display(description=_("test accuracy"), ordering="test_accuracy")
    def accuracy(self, run: Run) -> str:
        return format_accuracy(getattr(run, "test_accuracy", None))

    @admin.display(description=_("duration"), ordering="run_seconds")
    def duration(self, run: Run) -> str:
        return format_duration(run.run_seconds)

    @admin.display(description=_("progress"))
    def progress_shown(self, run: Run) -> str:
        return f"{run.progress_percent}%"

    @admin.display(description=_("live page"))
    def live_page(self, run: Run) -> str:
        link = format_html(
            '<a href="{}" class="live-run-link">{}</a>', live_run_url(run), _("Open the live run page")
        )
        if not run.is_active():
            return link
        # training-admin-refresh.js reloads the page while the run is queued or running.
        return format_html(
            '{} <span class="help" data-admin-refresh="{}">{}</span>',
            link,
            ADMIN_REFRESH_SECONDS,
            _("This page refreshes itself every %(seconds)d seconds while the run is active.")
            % {"seconds": ADMIN_REFRESH_SECONDS},
        )

    @admin.action(description=_("Cancel the selected runs"), permissions=["cancel"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        from training import services

        stopped = refused = 0
        for run in queryset.filter(
            status__in=[Run.Status.QUEUED, Run.Status.RUNNING, Run.Status.INTERRUPTED]
        ):
            try:
                services.run_stop(run=run)
            except services.RunRefused:
                refused += 1  # it finished between the list and the click
            else:
                stopped += 1
        skipped = queryset.count() - stopped
        if stopped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d run cancelled (a running one stops at its next batch).",
                    "%(count)d runs cancelled (running ones stop at their next batch).",
                    stopped,
                )
                % {"count": stopped},
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d run had already finished and was left as it was.",
                    "%(count)d runs had already finished and were left as they were.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )

    @admin.action(description=_("Export the selected runs as CSV"), permissions=["view"])
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[WithAnnotations[Run, MeasuredAccuracy]]
    ) -> HttpResponse:
        header = [
            _("run"),
            _("student"),
            _("email"),
            _("design"),
            _("version"),
            _("dataset"),
            _("status"),
            _("test accuracy"),
            _("epochs"),
            _("device"),
            _("seconds"),
            _("created"),
        ]
        rows = (
            [
                run.pk,
                run.owner.display_name,  # the name, else the address: never an empty cell
                run.owner.email,
                run.design_version.design.name,
                run.design_version.number,
                run.dataset,
                run.status,
                "" if run.test_accuracy is None else f"{run.test_accuracy:.4f}",
                run.epoch,
                run.device,
                round(run.run_seconds, 1),
                run.created_at.isoformat(),
            ]
            for run in queryset.select_related("owner", "design_version__design").order_by("-created_at")
        )
        return csv_response(filename="runs.csv", header=header, rows=rows)


class RunChildAdmin(StudentScopedAdmin):
    """Rows of a run (events, epochs, files): read-only, listed with their student."""

    owner_field = "run__owner"
    list_select_related = ["run__owner"]
    list_filter = [CourseListFilter]
    search_fields = ["run__owner__email", "run__owner__first_name", "run__owner__last_name"]

    @admin.display(description=_("student"), ordering="run__owner__email")
    def student(self, row) -> str:
        return row.run.owner.display_name

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(RunEvent)
class RunEventAdmin(RunChildAdmin):
    list_display = ["run", "student", "seq", "kind", "text", "created_at"]
    list_filter = [CourseListFilter, "kind"]
    readonly_fields = ["run", "seq", "kind", "payload", "created_at"]
    show_full_result_count = False  # counting millions of events for a footer is not worth it

    @admin.display(description=_("line"))
    def text(self, event: RunEvent) -> str:
        return event_text(event)


@admin.register(EpochMetric)
class EpochMetricAdmin(RunChildAdmin):
    list_display = ["run", "student", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    readonly_fields = ["run", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


@admin.register(RunArtifact)
class RunArtifactAdmin(RunChildAdmin):
    list_display = ["run", "student", "kind", "filename", "size", "epoch", "updated_at"]
    list_filter = [CourseListFilter, "kind"]
    readonly_fields = ["run", "kind", "file", "filename", "size", "epoch", "updated_at"]


def register_run_action(action: Callable[..., Any]) -> None:
    """An app above training adds an action to the run admin (feedback: "Request feedback again")
    without training importing it."""
    if action not in RunAdmin.actions:
        RunAdmin.actions = [*RunAdmin.actions, action]


RESULTS_HEADER = [
    _("course"),
    _("term"),
    _("student"),
    _("email"),
    _("runs"),
    _("succeeded"),
    _("best accuracy"),
    _("last run"),
]


def results_rows(courses: Iterable[Course]) -> Iterator[list]:
    """One CSV row per student per course: one query per course (a course is a handful of rows)."""
    for course in courses:
        for student in selectors.course_student_results(course=course):
            yield [
                course.name,
                course.term,
                student.display_name,
                student.email,
                student.run_count,
                student.succeeded_count,
                "" if student.best_accuracy is None else f"{student.best_accuracy:.4f}",
                student.last_run_at.isoformat() if student.last_run_at else "",
            ]


# A course's results are runs: the overview and the CSV export join the course admin from here, so
# that accounts never reads training's models.
admin.site.unregister(Course)


@admin.register(Course)
class CourseResultsAdmin(CourseAdmin):
    readonly_fields = [*CourseAdmin.readonly_fields, "overview_link"]
    fields = [*CourseAdmin.fields, "overview_link"]
    actions = ["export_results_csv", *CourseAdmin.actions]

    @admin.display(description=_("overview"))
    def overview_link(self, course: Course) -> str:
        if course.pk is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:accounts_course_overview", args=[course.pk]),
            _("Open the overview"),
        )

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/overview/", wrap(self.overview_view), name="accounts_course_overview"),
            path("<path:object_id>/results.csv", wrap(self.results_csv_view), name="accounts_course_results"),
        ] + super().get_urls()

    def _course_or_404(self, request: HttpRequest, object_id: str) -> Course:
        # get_object reads through get_queryset: another instructor's course is simply not there.
        course = self.get_object(request, object_id)
        if course is None or not self.has_view_permission(request, course):
            raise Http404(_("There is no such course among yours."))
        return course

    def overview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        course = self._course_or_404(request, object_id)
        students = list(selectors.course_student_results(course=course))
        runs = list(selectors.course_recent_runs(course=course))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Overview of %(course)s") % {"course": course},
            "course": course,
            "students": students,
            "runs": runs,
            "run_changelist_url": reverse("admin:training_run_changelist"),
            "results_csv_url": reverse("admin:accounts_course_results", args=[course.pk]),
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/accounts/course/overview.html", context)

    def results_csv_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        course = self._course_or_404(request, object_id)
        return csv_response(
            filename=f"course-{course.pk}-results.csv", header=RESULTS_HEADER, rows=results_rows([course])
        )

    @admin.action(description=_("Export the results of the selected courses as CSV"), permissions=["view"])
    def export_results_csv(self, request: HttpRequest, queryset: QuerySet[Course]) -> HttpResponse:
        return csv_response(filename="course-results.csv", header=RESULTS_HEADER, rows=results_rows(queryset))
