"""The project's own models: what sits beside the LLM client at the project level.

Every app may write here (they are all above ``buildx``); ``buildx`` reads no app's models.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


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
