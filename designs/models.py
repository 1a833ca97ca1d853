from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _


class Design(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="designs")
    name = models.CharField(_("name"), max_length=120)
    description = models.TextField(_("description"), blank=True)
    # The starter design it was opened from ("lenet5_mnist"), blank for one built from scratch.
    starter = models.CharField(_("starter"), max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Set for a whole list by designs.selectors.with_latest_versions (absent otherwise).
    _latest_version: DesignVersion | None

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.name

    @property
    def latest_version(self) -> DesignVersion | None:
        # designs.selectors.with_latest_versions() sets it for a whole page in one query.
        if hasattr(self, "_latest_version"):
            return self._latest_version
        return self.versions.order_by("-number").first()


class DesignVersion(models.Model):
    """An immutable snapshot of a design's normalised spec. Saving a design creates a new one."""

    design = models.ForeignKey(Design, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    spec_hash = models.CharField(max_length=64, db_index=True)
    # The validation report at save time (shapes, parameter counts); the harness compares against it.
    report = models.JSONField(default=dict)
    # Where a version made by "Apply" on a feedback suggestion came from: the run whose feedback it was,
    # and the suggestion as applied ({"index", "suggestion", "label": {"en", "ko"}}). Both empty for a
    # version the user saved. Set by feedback.services.suggestion_apply; the compare page reads them.
    # A string reference, so designs imports nothing from training (the runs app depends on this one).
    derived_from_run = models.ForeignKey(
        "training.Run",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="derived_versions",
        verbose_name=_("changed from run"),
    )
    applied_suggestion = models.JSONField(_("applied suggestion"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["design", "-number"]
        constraints = [models.UniqueConstraint(fields=["design", "number"], name="unique_version_number")]

    def __str__(self) -> str:
        return f"{self.design.name} v{self.number}"

    @property
    def is_valid(self) -> bool:
        """No validation errors: the compiler accepts it (docs/contracts.md section 5)."""
        return bool(self.report) and not self.report.get("errors")

    @property
    def ready_to_train(self) -> bool:
        """Valid and its output is one score per class of its dataset."""
        return bool(self.report.get("ready_to_train"))

    def applied_label(self) -> str:
        """The applied suggestion's label in the active language (else English), or "" for a version the
        user saved."""
        labels = (self.applied_suggestion or {}).get("label") or {}
        return labels.get((get_language() or "en")[:2]) or labels.get("en") or ""


class CodeArtifact(models.Model):
    class Source(models.TextChoices):
        COMPILED = "compiled", _("Compiled")
        LLM = "llm", _("Written by AI")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        CHECKING = "checking", _("Checking")
        READY = "ready", _("Ready")
        REJECTED = "rejected", _("Rejected")
        FAILED = "failed", _("Failed")

    version = models.ForeignKey(DesignVersion, on_delete=models.CASCADE, related_name="artifacts")
    source = models.CharField(max_length=16, choices=Source.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    code = models.TextField(blank=True)
    code_hash = models.CharField(max_length=64, blank=True, db_index=True)
    # [{"name": "static", "ok": true, "message": "..."}, ...]
    checks = models.JSONField(default=list, blank=True)
    # LLM attempts: [{"n": 1, "latency_ms": ..., "tokens": ..., "errors": [...]}, ...]
    attempts = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The compiler is deterministic: one compiled artifact per version is all there ever needs to be.
            models.UniqueConstraint(
                fields=["version"],
                condition=models.Q(source="compiled"),
                name="one_compiled_artifact_per_version",
            )
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.get_source_display()})"

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY
