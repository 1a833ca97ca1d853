"""Numbers and values as every page shows them: one format for accuracy, separated thousands, and
words instead of Python's ``None`` / ``True`` / ``False``.

``{% load buildx_format %}`` then ``{{ run.metrics.accuracy|percent }}`` (0.864 → "86.4%"),
``{{ params|thousands }}`` (6090 → "6,090"), ``{{ value|plain }}`` (None → "—", False → "no").
"""

from __future__ import annotations

from django import template
from django.utils.translation import gettext as _

register = template.Library()

NONE = "—"


@register.filter
def percent(value: object) -> str:
    """A share in 0..1 as a percentage with one decimal, as the feedback and the admin say it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return NONE
    return f"{value * 100:.1f}%"


@register.filter
def thousands(value: object) -> str:
    """An integer with its thousands separated by commas (English and Korean write them alike)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return NONE if value is None else str(value)
    return f"{int(value):,}"


@register.filter
def plain(value: object) -> str:
    """A setting's value for a page: no Python spellings (None, True, False, ['a'])."""
    if value is None:
        return NONE
    if value is True:
        return _("yes")
    if value is False:
        return _("no")
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value)
    return str(value)
