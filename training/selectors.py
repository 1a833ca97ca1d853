"""Which runs a user may look at: their own, and as an instructor their students' (read-only)."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from accounts.admin_scoping import student_ids_of
from training.models import Run


def runs_viewable_by(user) -> QuerySet[Run]:
    """The user's runs, their students' runs when they teach a course, every run for a superuser.

    Only viewing: stopping, resuming, predicting and training stay with the owner (instructors cancel
    runs from the admin).
    """
    if user.is_superuser:
        return Run.objects.all()
    return Run.objects.filter(Q(owner=user) | Q(owner_id__in=student_ids_of(user)))
