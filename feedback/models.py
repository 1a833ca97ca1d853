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


class SuggestionTrial(models.Model):
    """One suggestion of a run's feedback, tried: the design with the suggestion applied (same seed, at
    most ``FEEDBACK_TRY_MAX_EPOCHS`` epochs), trained as an ordinary run of the owner's.

    ``index`` is the suggestion's number in the feedback (as Apply counts them); -1 is the baseline: the
    run's own design cut to the same epochs, trained only when the run itself had more, so that before
    and after are measured alike. ``run`` stays empty while the owner's concurrent-run quota is full;
    the next run of theirs that ends starts it.
    """

    feedback = models.ForeignKey(Feedback, on_delete=models.CASCADE, related_name="trials")
    index = models.IntegerField()
    suggestion = models.JSONField(default=dict, blank=True)
    version = models.ForeignKey("designs.DesignVersion", on_delete=models.CASCADE, related_name="+")
    run = models.OneToOneField(
        "training.Run", on_delete=models.SET_NULL, null=True, blank=True, related_name="suggestion_trial"
    )
    error = models.TextField(blank=True)  # why it could not be started, for the panel
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["feedback", "index"]
        constraints = [
            models.UniqueConstraint(fields=["feedback", "index"], name="unique_feedback_trial_index")
        ]

    def __str__(self) -> str:
        return f"Feedback {self.feedback_id} trial {self.index}"
