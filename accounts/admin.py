from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypedDict

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts import services
from accounts.admin_scoping import (
    CourseListFilter,
    StudentScopedAdmin,
    StudentScopedMixin,
    courses_visible_to,
)
from accounts.auth import signed_in_user
from accounts.models import JOIN_CODE_ALPHABET, JOIN_CODE_LENGTH, Course, Membership, User, new_join_code
from buildx.models import LLMCall

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class StudentCount(TypedDict):  # what CourseAdmin.get_queryset annotates on each course
    student_count: int


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
        return queryset.filter(course__in=courses_visible_to(signed_in_user(request)))


def grant_instructors(memberships: Iterable[Membership]) -> None:
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
        super()._post_clean()  # type: ignore[misc]  # django-stubs leaves out ModelForm._post_clean


@admin.register(User)
class UserAdmin(StudentScopedMixin, DjangoUserAdmin):
    owner_field = "pk"  # a user is their own owner
    add_form = UserCreationForm
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("email", "usable_password", "password1", "password2")}),
    )
    list_display = ("email", "first_name", "last_name", "phone_status", "is_staff", "date_joined")
    list_filter = (CourseListFilter, "phone_verified", "is_staff", "is_superuser", "is_active")
    search_fields = ("email", "first_name", "last_name", "username", "phone_number")
    ordering = ("email",)
    readonly_fields = ("phone_status",)
    fieldsets = (
        *(DjangoUserAdmin.fieldsets or ()),
        (_("BuildX"), {"fields": ("phone_number", "phone_verified", "preferred_language")}),
    )
    # What an instructor sees of a student: who they are, not their password, permissions or phone
    # number (only whether it is verified: whether they can log in with a code).
    instructor_fieldsets = (
        (None, {"fields": ("email", "first_name", "last_name", "preferred_language", "phone_status")}),
        (_("Activity"), {"fields": ("last_login", "date_joined")}),
    )

    @admin.display(description=_("phone"), ordering="phone_verified")
    def phone_status(self, user: User) -> str:
        if not user.phone_number:
            return gettext("no number")
        return gettext("verified") if user.phone_verified else gettext("not verified")

    def get_list_display(self, request: HttpRequest):
        if request.user.is_superuser:
            return (
                "email",
                "first_name",
                "last_name",
                "phone_number",
                "phone_status",
                "is_staff",
                "date_joined",
            )
        return self.list_display

    def get_search_fields(self, request: HttpRequest):
        # An instructor searching by number would learn which student has it.
        if request.user.is_superuser:
            return self.search_fields
        return tuple(field for field in self.search_fields if field != "phone_number")

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
        return (CourseListFilter, "phone_verified")


class CourseAddForm(forms.ModelForm):
    """The add form shows the join code it will save: a field of the form (its initial value is the
    model's default, drawn once per form), not a read-only display that draws a second code of its own."""

    class Meta:
        model = Course
        fields = ["name", "term", "join_code"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["join_code"]
        field.help_text = _("Students type this code to join the course. You can give new codes later.")
        field.widget.attrs.update({"readonly": True, "autocomplete": "off", "spellcheck": "false"})
        field.required = False  # a post without one (a script) gets a fresh code, as the model would

    def clean_join_code(self) -> str:
        code = services.normalise_join_code(self.cleaned_data.get("join_code") or "")
        if not code:
            return new_join_code()
        if len(code) != JOIN_CODE_LENGTH or any(ch not in JOIN_CODE_ALPHABET for ch in code):
            raise ValidationError(_("A join code is %(n)s letters and digits.") % {"n": JOIN_CODE_LENGTH})
        return code


@admin.register(Course)
class CourseAdmin(admin.ModelAdmin):
    list_display = ["name", "term", "join_code", "student_count", "overview_link"]
    search_fields = ["name", "term"]
    ordering = ["name", "term"]  # Meta.ordering is dropped from the annotated (GROUP BY) query
    readonly_fields = ["join_code", "created_at"]
    fields = ["name", "term", "join_code", "created_at"]
    inlines = [MembershipInline]
    actions = ["rotate_join_codes"]
    add_form = CourseAddForm

    def get_readonly_fields(self, request: HttpRequest, obj: Course | None = None):
        return ["created_at"] if obj is None else self.readonly_fields

    def get_fields(self, request: HttpRequest, obj: Course | None = None):
        return ["name", "term", "join_code"] if obj is None else self.fields

    def get_form(self, request: HttpRequest, obj: Course | None = None, change: bool = False, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, change=change, **kwargs)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Course]:
        queryset = (
            super()
            .get_queryset(request)
            .annotate(student_count=Count("memberships", filter=Q(memberships__role=Membership.Role.STUDENT)))
        )
        if request.user.is_superuser:
            return queryset
        return queryset.filter(pk__in=courses_visible_to(signed_in_user(request)).values("pk"))

    @admin.display(description=_("students"), ordering="student_count")
    def student_count(self, course: WithAnnotations[Course, StudentCount]) -> int:
        return course.student_count

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
        return queryset.filter(course__in=courses_visible_to(signed_in_user(request)))

    def save_model(self, request, obj: Membership, form, change) -> None:
        super().save_model(request, obj, form, change)
        grant_instructors([obj])


@admin.register(LLMCall)
class LLMCallAdmin(StudentScopedAdmin):
    """What the LLM cost and how it behaved; a record, so nothing here is editable.

    Scoped like every BuildX admin: an instructor sees the calls made for their students only.
    """

    owner_field = "user"
    list_display = [
        "created_at",
        "user",
        "purpose",
        "model",
        "tokens_in",
        "tokens_out",
        "cost",
        "latency_ms",
        "cached",
        "error",
    ]
    list_filter = ["purpose", "cached", "error", "model"]
    search_fields = ["user__email", "prompt_hash"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
