"""``{{ value|accuracy }}``: an accuracy on the admin's own pages as its change lists show it."""

from __future__ import annotations

from django import template

from accounts.admin_utils import format_accuracy

register = template.Library()
register.filter("accuracy", format_accuracy)
