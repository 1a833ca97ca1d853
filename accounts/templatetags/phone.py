from __future__ import annotations

from django import template

from accounts.phone import format_phone

register = template.Library()


@register.filter
def phone_display(value) -> str:
    """A stored number as its owner reads it: "010-1234-5678" at home, "+1 650-253-0000" abroad."""
    return format_phone(value) if value else ""
