from __future__ import annotations

from django.conf import settings
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
    # Why there is no narrative / explanation (LLM not configured, budget, timeout...), for the user.
    llm_note = models.CharField(_("LLM note"), max_length=255, blank=True)
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


class LLMCall(models.Model):
    """One call to buildx.llm.chat(): what it cost, how long it took, and how it ended.

    A cache hit is recorded too (cached=True, cost 0) so that a user's history is complete; the hourly
    budget and cost totals count only rows with cached=False. tokens_in/tokens_out are the answer's
    token counts as the API reported them (for a cache hit: those of the answer it reuses).
    """

    class Purpose(models.TextChoices):
        CODEGEN = "codegen", _("Code generation")
        CODE_REPAIR = "code_repair", _("Code repair")
        FEEDBACK = "feedback", _("Feedback narrative")
        ERROR_EXPLANATION = "error_explanation", _("Error explanation")
        OTHER = "other", _("Other")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="llm_calls"
    )
    purpose = models.CharField(_("purpose"), max_length=32, choices=Purpose.choices, default=Purpose.OTHER)
    model = models.CharField(_("model"), max_length=100)
    # sha256 of the canonical JSON of (model, messages, params): the cache key.
    prompt_hash = models.CharField(max_length=64)
    tokens_in = models.PositiveIntegerField(_("prompt tokens"), default=0)
    tokens_out = models.PositiveIntegerField(_("completion tokens"), default=0)
    cost = models.DecimalField(_("cost (USD)"), max_digits=12, decimal_places=6, default=0)
    latency_ms = models.PositiveIntegerField(_("latency (ms)"), default=0)
    cached = models.BooleanField(_("answered from the cache"), default=False)
    attempts = models.PositiveSmallIntegerField(_("HTTP attempts"), default=0)
    # Empty on success; otherwise the error code (not_configured, budget_exceeded, timeout, ...).
    error = models.CharField(_("error"), max_length=32, blank=True)
    error_detail = models.TextField(_("error detail"), blank=True)
    # The answer's text, kept so the cache survives a cache flush (see buildx.llm).
    response = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "created_at"], name="llmcall_user_time"),
            models.Index(fields=["prompt_hash", "created_at"], name="llmcall_prompt_time"),
        ]

    def __str__(self) -> str:
        state = "cached" if self.cached else (self.error or "ok")
        return f"{self.purpose} {self.model} ({state})"

    @property
    def succeeded(self) -> bool:
        return not self.error
