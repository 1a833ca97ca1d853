"""Designs in the admin, scoped: an instructor sees the designs of their own students only."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.admin_scoping import CourseListFilter, StudentScopedAdmin, StudentScopedInline
from designs import services
from designs.models import CodeArtifact, Design, DesignVersion

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class VersionCount(TypedDict):  # what DesignAdmin.get_queryset annotates on each design
    version_count: int


class ReadOnlyInline(StudentScopedInline, admin.TabularInline):
    template = "admin/edit_inline/readonly_tabular.html"
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class DesignVersionInline(ReadOnlyInline):
    model = DesignVersion
    owner_field = "design__owner"
    fields = ("number", "spec_hash", "created_at")
    readonly_fields = fields


class CodeArtifactInline(ReadOnlyInline):
    model = CodeArtifact
    owner_field = "version__design__owner"
    fields = ("source", "status", "error", "created_at")
    readonly_fields = fields


# The request attribute that carries a refused delete from delete_model() to response_delete().
DELETE_REFUSED = "buildx_design_delete_refused"


@admin.register(Design)
class DesignAdmin(StudentScopedAdmin):
    owner_field = "owner"
    list_display = ["name", "owner", "starter", "version_count", "updated_at"]
    list_filter = [CourseListFilter, ("owner", admin.RelatedOnlyFieldListFilter), "starter"]
    search_fields = ["name", "owner__email", "owner__first_name", "owner__last_name"]
    list_select_related = ["owner"]
    autocomplete_fields = ["owner"]
    ordering = ["-updated_at"]  # Meta.ordering is dropped from the annotated (GROUP BY) query
    inlines = [DesignVersionInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Design]:
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    # Deleting goes through the designs service, as the pages and the API do: the design's runs and
    # their files in storage go with it, and a design with a run that may still train is kept.
    # A refused delete goes back to the design's page with the reason, without Django's "deleted
    # successfully" message that response_delete() would add.
    def delete_model(self, request: HttpRequest, obj: Design) -> None:
        try:
            services.design_delete(design=obj)
        except services.DesignDeleteRefused as exc:
            setattr(request, DELETE_REFUSED, str(exc))

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: int) -> HttpResponse:
        refused = getattr(request, DELETE_REFUSED, None)
        if refused is None:
            return super().response_delete(request, obj_display, obj_id)
        self.message_user(request, refused, messages.ERROR)
        return HttpResponseRedirect(reverse("admin:designs_design_change", args=[obj_id]))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Design]) -> None:
        kept = 0
        for design in queryset:
            try:
                services.design_delete(design=design)
            except services.DesignDeleteRefused:
                kept += 1
        if kept:
            self.message_user(
                request,
                ngettext(
                    "%(count)d design with a run that may still train was kept: stop the run first.",
                    "%(count)d designs with a run that may still train were kept: stop the runs first.",
                    kept,
                )
                % {"count": kept},
                messages.WARNING,
            )

    @admin.display(description=_("versions"), ordering="version_count")
    def version_count(self, design: WithAnnotations[Design, VersionCount]) -> int:
        return design.version_count


@admin.register(DesignVersion)
class DesignVersionAdmin(StudentScopedAdmin):
    """Versions are immutable: the admin shows them and never edits them."""

    owner_field = "design__owner"
    list_display = ["design", "number", "owner", "spec_hash", "created_at"]
    list_filter = [CourseListFilter]
    search_fields = ["design__name", "design__owner__email", "spec_hash"]
    list_select_related = ["design__owner"]
    readonly_fields = ["design", "number", "spec", "spec_hash", "report", "created_at"]
    inlines = [CodeArtifactInline]

    @admin.display(description=_("student"), ordering="design__owner__email")
    def owner(self, version: DesignVersion):
        return version.design.owner

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(CodeArtifact)
class CodeArtifactAdmin(StudentScopedAdmin):
    owner_field = "version__design__owner"
    list_display = ["version", "owner", "source", "status", "created_at"]
    list_filter = [CourseListFilter, "source", "status"]
    search_fields = ["version__design__name", "version__design__owner__email", "code_hash"]
    list_select_related = ["version__design__owner"]
    readonly_fields = (
        "version",
        "source",
        "status",
        "code_block",
        "code_hash",
        "checks",
        "attempts",
        "error",
        "latency_ms",
        "prompt_tokens",
        "completion_tokens",
        "created_at",
    )

    fields = readonly_fields

    @admin.display(description=_("student"), ordering="version__design__owner__email")
    def owner(self, artifact: CodeArtifact):
        return artifact.version.design.owner

    @admin.display(description=_("code"))
    def code_block(self, artifact: CodeArtifact) -> str:
        # Python needs its indentation: a <pre>, not the admin's default line breaks.
        return format_html('<pre class="code-artifact">{}</pre>', artifact.code)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
