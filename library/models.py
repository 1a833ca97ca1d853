"""Datasets the app owns: uploaded zips of class folders, checked in a worker into a tensor cache.

A design names an uploaded dataset as ``upload-<id>`` (``Dataset.spec_name``); the built-in sets keep their
names ("digits", "CIFAR10") and their facts in sandbox/engine/dataset_facts.py. A run records the dataset
it trained on by id and content hash (``training.Run.dataset_ref``, ``Run.dataset_hash``).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

SPEC_NAME = re.compile(r"^upload-([1-9][0-9]{0,11})$")


class Dataset(models.Model):
    """An uploaded dataset.

    Status transitions (compare-and-set in ``library.services``)::

        uploading ──all bytes in──> checking ──> ready
                                        └──────> rejected (problems say why)
    """

    class Visibility(models.TextChoices):
        PRIVATE = "private", _("Only me")
        COURSE = "course", _("Shared with a course")
        BUILTIN = "builtin", _("Built-in")

    class Kind(models.TextChoices):
        # Another kind (text corpora for language models) joins this list: the status, quota, sharing and
        # run references are the same for every kind.
        IMAGE_CLASSIFICATION = "image_classification", _("Image classification")
        TEXT = "text", _("Text (language models)")

    class Status(models.TextChoices):
        UPLOADING = "uploading", _("Uploading")
        CHECKING = "checking", _("Checking")
        READY = "ready", _("Ready")
        REJECTED = "rejected", _("Rejected")

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets", verbose_name=_("owner")
    )
    visibility = models.CharField(
        _("visibility"), max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE
    )
    course = models.ForeignKey(
        "accounts.Course",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="datasets",
        verbose_name=_("course"),
    )
    name = models.CharField(_("name"), max_length=120)
    description = models.TextField(_("description"), blank=True)
    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices, default=Kind.IMAGE_CLASSIFICATION)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.UPLOADING, db_index=True
    )
    # The upload: its declared size and the bytes received so far (chunks resume from here).
    size = models.BigIntegerField(_("size"), default=0)
    received = models.BigIntegerField(default=0)
    filename = models.CharField(max_length=255, blank=True)
    # The side the user chose for the images (square), or null: the most common size, up to 64 pixels.
    image_side = models.PositiveSmallIntegerField(null=True, blank=True)
    # What the check found (set once it is ready).
    input_shape = models.JSONField(_("input shape"), default=list, blank=True)  # [C, H, W]
    class_names = models.JSONField(default=list, blank=True)
    counts = models.JSONField(default=dict, blank=True)  # class -> images
    split = models.JSONField(default=dict, blank=True)  # {"train", "test", "own": bool, "moved_duplicates"}
    mean = models.JSONField(default=list, blank=True)
    std = models.JSONField(default=list, blank=True)
    content_hash = models.CharField(_("content hash"), max_length=64, blank=True)
    cache_bytes = models.BigIntegerField(default=0)
    # The check's answers: [{"entry", "code", "message", "params"}] (problems reject; warnings do not).
    problems = models.JSONField(default=list, blank=True)
    more_problems = models.PositiveIntegerField(default=0)
    warnings = models.JSONField(default=list, blank=True)
    progress = models.JSONField(default=dict, blank=True)  # {"stage", "done", "total"} while checking
    # A text dataset (library/text_datasets.py): {"tokenizer", "vocab_size"} as asked at upload; once ready
    # also "chars", "lines", "tokens" ({train, val, test}), "sample", "prompt", "alphabet" (char only).
    text_facts = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("dataset")
        verbose_name_plural = _("datasets")
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["course", "visibility"]),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def spec_name(self) -> str:
        """How a design names it (``"dataset": "upload-17"``)."""
        return f"upload-{self.pk}"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def images(self) -> int:
        return sum(int(n) for n in self.counts.values())

    @property
    def is_text(self) -> bool:
        return self.kind == self.Kind.TEXT

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY


def spec_id(name: object) -> int | None:
    """The id in a spec's ``upload-<id>``, or None for any other name."""
    if not isinstance(name, str):
        return None
    match = SPEC_NAME.match(name)
    return int(match.group(1)) if match else None
