from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LibraryConfig(AppConfig):
    """The dataset library: datasets people bring (uploaded zips) and the built-in sets' availability."""

    name = "library"
    verbose_name = _("Datasets")
    default_auto_field = "django.db.models.BigAutoField"
