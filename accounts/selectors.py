"""Reads about courses that several pages share: the overview in the admin and its CSV export.

Runs live in the training app, which depends on accounts; these functions import it when called so
that importing accounts never pulls in training.
"""

from __future__ import annotations

from django.db.models import Case, Count, FloatField, Max, Q, QuerySet, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from accounts.models import Course, Membership, User

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


def course_student_results(*, course: Course) -> QuerySet[User]:
    """The course's students, each annotated with ``run_count``, ``succeeded_count``,
    ``best_accuracy`` (None before a finished run) and ``last_run_at``: one query whatever the runs."""
    from training.models import Run

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


def course_recent_runs(*, course: Course, limit: int = RECENT_RUNS) -> QuerySet:
    from training.models import Run

    students = Membership.objects.filter(course=course, role=Membership.Role.STUDENT).values("user_id")
    return (
        Run.objects.filter(owner_id__in=students)
        .select_related("owner", "design_version__design")
        .annotate(test_accuracy=accuracy_of())
        .order_by("-created_at")[:limit]
    )
