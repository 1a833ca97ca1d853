from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Feedback(models.Model):
    """What BuildX says about one finished run: rule-based findings, an optional LLM narrative or error
    explanation, and the user's rating of it.

    ``findings`` are stored as docs/contracts.md section 6 says (``Finding.as_dict(with_text=False)``):
    codes and evidence, rendered in the viewer's language when shown, so switching language needs no
    new diagnosis.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    run = models.OneToOneField("training.Run", on_delete=models.CASCADE, related_name="feedback")
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    findings = models.JSONField(_("findings"), default=list, blank=True)
    narrative = models.TextField(_("narrative"), blank=True)
    narrative_language = models.CharField(_("narrative language"), max_length=8, blank=True)
    error_explanation = models.TextField(_("error explanation"), blank=True)
    # Why there is no narrative / explanation (LLM not configured, budget, timeout...), as a code and its
    # parameters: feedback.services.note_text() renders them in the viewer's language when shown.
    llm_note = models.CharField(_("LLM note"), max_length=255, blank=True)
    llm_note_params = models.JSONField(_("LLM note parameters"), default=dict, blank=True)
    helpful = models.BooleanField(_("helpful"), null=True, blank=True)
    rated_at = models.DateTimeField(_("rated at"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("feedback")
        verbose_name_plural = _("feedback")

    def __str__(self) -> str:
        return f"Feedback on run {self.run_id} ({self.status})"
