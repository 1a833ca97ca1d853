"""Which datasets a user may see and train on."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from accounts.models import Membership, User
from library.models import Dataset


def datasets_visible_to(user: User) -> QuerySet[Dataset]:
    """Their own datasets (any status), and the ready ones shared with a course they belong to."""
    courses = Membership.objects.filter(user=user).values("course_id")
    shared = Q(visibility=Dataset.Visibility.COURSE, course_id__in=courses, status=Dataset.Status.READY)
    return Dataset.objects.filter(Q(owner=user) | shared)


def datasets_usable_by(user: User) -> QuerySet[Dataset]:
    """What the user may train on: the visible datasets that are ready."""
    return datasets_visible_to(user).filter(status=Dataset.Status.READY)
