from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.admin_scoping import CourseListFilter, StudentScopedAdmin
from feedback.models import Feedback
from feedback.services import note_text
from feedback.texts import show
from training.admin import register_run_action
from training.models import Run


@admin.action(description=_("Request feedback again"), permissions=["view"])
def request_feedback_again(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Diagnose the selected finished runs again (and rewrite the narrative where an LLM is configured).

    Shared by the run admin (``queryset`` of runs) and the feedback admin (of feedback): either way
    the queryset is the admin's, already scoped to the viewer's students. Asking again only re-reads
    stored numbers, so viewing the run is permission enough.
    """
    from feedback import services

    runs = queryset if queryset.model is Run else Run.objects.filter(feedback__in=queryset)
    finished = list(runs.filter(status__in=Run.FINISHED).select_related("design_version"))
    for run in finished:
        # The findings now (pure, milliseconds); the narrative and the browser's message from the actor.
        services.feedback_diagnose(run=run)
        services.feedback_request(run=run)
    if finished:
        modeladmin.message_user(
            request,
            ngettext(
                "Feedback requested again for %(count)d run; it is ready in a few seconds.",
                "Feedback requested again for %(count)d runs; it is ready in a few seconds.",
                len(finished),
            )
            % {"count": len(finished)},
            messages.SUCCESS,
        )
    skipped = runs.count() - len(finished)
    if skipped:
        modeladmin.message_user(
            request,
            ngettext(
                "%(count)d run has not finished yet: its feedback comes when it ends.",
                "%(count)d runs have not finished yet: their feedback comes when they end.",
                skipped,
            )
            % {"count": skipped},
            messages.WARNING,
        )


@admin.register(Feedback)
class FeedbackAdmin(StudentScopedAdmin):
    """Feedback on the runs of an instructor's students: what was found, what the LLM wrote, the rating."""

    owner_field = "run__owner"
    list_display = ["run", "student", "status", "finding_codes", "helpful", "created_at"]
    list_filter = [CourseListFilter, "status", "helpful"]
    search_fields = ["run__owner__email", "run__design_version__design__name"]
    list_select_related = ["run__owner"]
    date_hierarchy = "created_at"
    actions = [request_feedback_again]
    exclude = ["llm_note", "llm_note_params"]  # a code and its numbers: shown rendered, as "note"
    readonly_fields = [
        "run",
        "status",
        "findings_read",
        "narrative",
        "narrative_language",
        "error_explanation",
        "note",
        "findings",
        "helpful",
        "rated_at",
        "created_at",
        "updated_at",
    ]

    @admin.display(description=_("student"), ordering="run__owner__email")
    def student(self, feedback: Feedback) -> str:
        return str(feedback.run.owner)  # the email, or the name of one who signed up by phone

    @admin.display(description=_("findings"))
    def finding_codes(self, feedback: Feedback) -> str:
        return ", ".join(f.get("code", "") for f in feedback.findings or []) or "-"

    @admin.display(description=_("what the student reads"))
    def findings_read(self, feedback: Feedback) -> str:
        """The findings as the student's run page words them, in the viewer's language."""
        shown = [show(f.get("code", ""), f.get("evidence") or {}) for f in feedback.findings or []]
        return (
            format_html_join(
                "", "<p><strong>{}</strong><br>{}</p>", ((s.title, s.explanation) for s in shown)
            )
            or "-"
        )

    @admin.display(description=_("LLM note"))
    def note(self, feedback: Feedback) -> str:
        return note_text(code=feedback.llm_note, params=feedback.llm_note_params) or "-"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


register_run_action(request_feedback_again)
