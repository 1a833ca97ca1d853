"""Datasets in the admin, scoped as everything else: an instructor sees their students' datasets and the
datasets shared with the courses they teach (their own included), never another course's."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from accounts.admin_scoping import CourseListFilter, StudentScopedAdmin, courses_visible_to, student_ids_of
from accounts.auth import signed_in_user
from library.models import Dataset


@admin.register(Dataset)
class DatasetAdmin(StudentScopedAdmin):
    owner_field = "owner"
    list_display = ["name", "owner", "status", "visibility", "course", "kind", "size", "created_at"]
    list_filter = [CourseListFilter, "status", "visibility", "kind"]
    search_fields = ["name", "owner__email", "owner__first_name", "owner__last_name"]
    list_select_related = ["owner", "course"]
    readonly_fields = [
        "owner",
        "status",
        "kind",
        "size",
        "received",
        "input_shape",
        "class_names",
        "counts",
        "split",
        "mean",
        "std",
        "content_hash",
        "problems",
        "warnings",
        "created_at",
        "updated_at",
        "checked_at",
    ]

    def scope(self, queryset: QuerySet, request: HttpRequest) -> QuerySet:
        user = signed_in_user(request)
        if user.is_superuser:
            return queryset
        taught = courses_visible_to(user).values("pk")
        return queryset.filter(
            Q(owner_id__in=student_ids_of(user))
            | Q(visibility=Dataset.Visibility.COURSE, course_id__in=taught)
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # datasets come in through the upload page, which checks them
