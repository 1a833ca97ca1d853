from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from accounts import selectors, services
from accounts.admin_scoping import CourseListFilter, StudentScopedMixin, courses_visible_to
from accounts.admin_utils import csv_response, format_accuracy
from accounts.models import Course, Membership, User

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


def results_rows(courses: QuerySet[Course]):
    """One CSV row per student per course: one query per course (a course is a handful of rows)."""
    for course in courses:
        for student in selectors.course_student_results(course=course):
            yield [
                course.name,
                course.term,
                student.get_full_name(),
                student.email,
                student.run_count,
                student.succeeded_count,
                "" if student.best_accuracy is None else f"{student.best_accuracy:.4f}",
                student.last_run_at.isoformat() if student.last_run_at else "",
            ]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "joined_at"]
    readonly_fields = ["joined_at"]
    verbose_name = _("member")
    verbose_name_plural = _("members")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        # On a user's page, only the courses the viewer teaches: an instructor does not learn
        # which other courses their student takes.
        queryset = super().get_queryset(request).select_related("user", "course")
        if request.user.is_superuser:
            return queryset
        return queryset.filter(course__in=courses_visible_to(request.user))


def grant_instructors(memberships) -> None:
    for membership in memberships:
        if membership.role == Membership.Role.INSTRUCTOR:
            services.instructor_grant(user=membership.user)


class UserCreationForm(AdminUserCreationForm):
    """Django's add-user form asks for a username; ours asks for the email, which is the login."""

    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("email",)

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"])
        if User.objects.filter(email__iexact=email).exists():
            raise ValidationError(_("A user with this email address already exists."))
        return email

    def _post_clean(self) -> None:
        # The username mirrors the email everywhere (see UserManager); fill it before validation.
        self.instance.username = self.cleaned_data.get("email", "")
        super()._post_clean()


@admin.register(User)
class UserAdmin(StudentScopedMixin, DjangoUserAdmin):
    owner_field = "pk"  # a user is their own owner
    add_form = UserCreationForm
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("email", "usable_password", "password1", "password2")}),
    )
    list_display = ("email", "first_name", "last_name", "is_staff", "date_joined")
    list_filter = (CourseListFilter, "is_staff", "is_superuser", "is_active")
    search_fields = ("email", "first_name", "last_name", "username")
    ordering = ("email",)
    fieldsets = DjangoUserAdmin.fieldsets + (
        (_("BuildX"), {"fields": ("phone_number", "preferred_language")}),
    )
    # What an instructor sees of a student: who they are, not their password or permissions.
    instructor_fieldsets = (
        (None, {"fields": ("email", "first_name", "last_name", "preferred_language")}),
        (_("Activity"), {"fields": ("last_login", "date_joined")}),
    )
    inlines = [MembershipInline]

    def get_inlines(self, request: HttpRequest, obj=None):
        # Adding a user is the email and password only; courses come after, on the user's page.
        return self.inlines if obj is not None else []

    def get_fieldsets(self, request: HttpRequest, obj=None):
        if obj is not None and not request.user.is_superuser:
            return self.instructor_fieldsets
        return super().get_fieldsets(request, obj)

    def get_list_filter(self, request: HttpRequest):
        if request.user.is_superuser:
            return self.list_filter
        return (CourseListFilter,)


@admin.register(Course)
class CourseAdmin(admin.ModelAdmin):
    list_display = ["name", "term", "join_code", "student_count", "overview_link"]
    search_fields = ["name", "term"]
    ordering = ["name", "term"]  # Meta.ordering is dropped from the annotated (GROUP BY) query
    readonly_fields = ["join_code", "created_at", "overview_link"]
    fields = ["name", "term", "join_code", "created_at", "overview_link"]
    inlines = [MembershipInline]
    actions = ["export_results_csv", "rotate_join_codes"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Course]:
        queryset = (
            super()
            .get_queryset(request)
            .annotate(student_count=Count("memberships", filter=Q(memberships__role=Membership.Role.STUDENT)))
        )
        if request.user.is_superuser:
            return queryset
        return queryset.filter(pk__in=courses_visible_to(request.user).values("pk"))

    @admin.display(description=_("students"), ordering="student_count")
    def student_count(self, course: Course) -> int:
        return course.student_count

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
        for row in students:
            row.best_accuracy_text = format_accuracy(row.best_accuracy)
        for run in runs:
            run.accuracy_text = format_accuracy(run.test_accuracy)
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

    @admin.action(description=_("Give the selected courses new join codes"), permissions=["change"])
    def rotate_join_codes(self, request: HttpRequest, queryset: QuerySet[Course]) -> None:
        for course in queryset:
            services.course_rotate_code(course=course)
        self.message_user(request, _("New join codes given: the old ones no longer work."), messages.SUCCESS)

    def save_formset(self, request, form, formset, change) -> None:
        super().save_formset(request, form, formset, change)
        if formset.model is Membership:
            # An instructor needs the admin and the Instructors group to see their students.
            grant_instructors(
                form.instance.memberships.filter(role=Membership.Role.INSTRUCTOR).select_related("user")
            )


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "course", "role", "joined_at"]
    list_filter = [("course", admin.RelatedOnlyFieldListFilter), "role"]
    search_fields = ["user__email", "user__first_name", "user__last_name", "course__name"]
    list_select_related = ["user", "course"]
    autocomplete_fields = ["user", "course"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(course__in=courses_visible_to(request.user))

    def save_model(self, request, obj: Membership, form, change) -> None:
        super().save_model(request, obj, form, change)
        grant_instructors([obj])
