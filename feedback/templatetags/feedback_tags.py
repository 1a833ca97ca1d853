"""``{% feedback_panel run %}``: the feedback panel of a finished run page, rendered from the stored Feedback.

A tag rather than context from training's view, so the run page needs one include line and nothing
in training knows the shape of feedback.
"""

from __future__ import annotations

from django import template

register = template.Library()


@register.inclusion_tag("feedback/_panel.html", takes_context=True)
def feedback_panel(context, run) -> dict:
    from feedback import services
    from feedback.models import Feedback

    feedback = Feedback.objects.filter(run=run).first() if run.is_finished() else None
    return {
        "run": run,
        "finished": run.is_finished(),
        "feedback": services.feedback_view(feedback=feedback) if feedback else None,
        "applied": services.applied_versions(run=run) if feedback else [],
        "csrf_token": context.get("csrf_token"),
        # An instructor reads a student's feedback; applying and rating are the student's.
        "read_only": context.get("request") is not None and context["request"].user.pk != run.owner_id,
    }
