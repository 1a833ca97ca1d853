"""What an instructor may see in the admin: the work of the students of the courses they teach.

Every admin module of BuildX builds on ``StudentScopedAdmin`` (and ``StudentScopedInline``), which
filter ``get_queryset`` by the user who owns each row. Django's admin reads objects through
``get_queryset`` everywhere that matters, so one filter covers:

- change lists, their counts, actions and CSV exports (actions get the list's queryset);
- change, history and delete pages by URL (``get_object`` -> None -> "doesn't exist" redirect);
- inlines (``InlineModelAdmin.get_queryset``);
- list filters built on the queryset (``RelatedOnlyFieldListFilter``, ``AllValuesFieldListFilter``,
  ``CourseListFilter``); plain ``RelatedFieldListFilter`` would list every user, so it is not used;
- the autocomplete endpoint, which searches the related model admin's ``get_queryset``;
- foreign-key choices on forms (``formfield_for_foreignkey`` below).

Superusers see everything. Any other staff member sees only the students of the courses where they
are an instructor: someone who teaches nothing sees nothing, so a forgotten permission never leaks.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.options import BaseModelAdmin
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from accounts.auth import signed_in_user
from accounts.models import Course, Membership, User


def courses_visible_to(user: User) -> QuerySet[Course]:
    if user.is_superuser:
        return Course.objects.all()
    return Course.objects.filter(memberships__user=user, memberships__role=Membership.Role.INSTRUCTOR)


def student_ids_of(user: User) -> QuerySet:
    """Ids of the students in the courses ``user`` teaches, as a subquery (no query of its own)."""
    taught = Membership.objects.filter(user=user, role=Membership.Role.INSTRUCTOR).values("course_id")
    return Membership.objects.filter(role=Membership.Role.STUDENT, course_id__in=taught).values("user_id")


def scope_to_students(queryset: QuerySet, *, user: User, owner_field: str) -> QuerySet:
    """``queryset`` narrowed to rows whose ``owner_field`` (a path to a User) is one of ``user``'s students.

    A subquery rather than a join: no duplicate rows for a student in two of the instructor's
    courses, and the change list's count stays one query.
    """
    if user.is_superuser:
        return queryset
    if owner_field == "pk":
        return queryset.filter(pk__in=student_ids_of(user))
    return queryset.filter(**{f"{owner_field}_id__in": student_ids_of(user)})


class StudentScopedMixin(BaseModelAdmin):
    """For ModelAdmin and InlineModelAdmin (put it first: it overrides their common base's methods): set
    ``owner_field`` to the path from the model to its User."""

    owner_field = "owner"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return self.scope(super().get_queryset(request), request)

    def scope(self, queryset: QuerySet, request: HttpRequest) -> QuerySet:
        return scope_to_students(queryset, user=signed_in_user(request), owner_field=self.owner_field)

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        choices = scoped_choices(self.admin_site, db_field.remote_field.model, request)
        if choices is not None and "queryset" not in kwargs:
            kwargs["queryset"] = choices
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request: HttpRequest, **kwargs):
        choices = scoped_choices(self.admin_site, db_field.remote_field.model, request)
        if choices is not None and "queryset" not in kwargs:
            kwargs["queryset"] = choices
        return super().formfield_for_manytomany(db_field, request, **kwargs)


def scoped_choices(admin_site: admin.AdminSite, model: type[Model], request: HttpRequest) -> QuerySet | None:
    """The rows of ``model`` that ``request.user`` may pick in a form, where its admin is scoped."""
    model_admin = admin_site._registry.get(model)
    if isinstance(model_admin, StudentScopedMixin):
        return model_admin.get_queryset(request)
    return None


class StudentScopedAdmin(StudentScopedMixin, admin.ModelAdmin):
    pass


class StudentScopedInline(StudentScopedMixin):
    """Mix into TabularInline / StackedInline before the Django class."""


class CourseListFilter(admin.SimpleListFilter):
    """Filter any list whose rows belong to a user by course; offers only the courses the viewer teaches."""

    title = _("course")
    parameter_name = "course"

    def __init__(self, request, params, model, model_admin) -> None:
        self.owner_field = getattr(model_admin, "owner_field", "owner")
        super().__init__(request, params, model, model_admin)

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [(str(course.pk), str(course)) for course in courses_visible_to(signed_in_user(request))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        try:
            course_id = int(value)
        except ValueError:
            return queryset.none()
        # A course the viewer does not teach filters to nothing: the scoping has already removed its students.
        students = Membership.objects.filter(course_id=course_id, role=Membership.Role.STUDENT).values(
            "user_id"
        )
        if self.owner_field == "pk":
            return queryset.filter(pk__in=students)
        return queryset.filter(**{f"{self.owner_field}_id__in": students})
